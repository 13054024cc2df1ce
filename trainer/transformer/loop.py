"""A fast fine-tuning loop: tokenise once, token-budget length buckets, bf16 where native,
fused AdamW on CUDA."""
from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import get_linear_schedule_with_warmup

from trainer.errors import ConfigError, TrainingDiverged
from trainer.transformer.fast import native_bf16
from trainer.transformer.fused_layers import encoder_layers, first_token_last_layer
from trainer.transformer.model import uses_sdpa
from trainer.transformer.params import FAST_LOOP, resolve
from trainer.transformer.truncate import encode_ids

# Batches are padded to a multiple of this: on a GPU few distinct shapes (kernels, compiled
# graphs), on a CPU, where shapes cost nothing, little padding (2% of 800 reviews' tokens at
# 256, against 8% with 64).
PAD_MULTIPLE = {"cuda": 64, "cpu": 16}
NAN_CHECK_EVERY = 50  # steps between the only host syncs of training: a finite-loss check
# Padded tokens per step on a GPU: 32k kept the H200's 1-epoch accuracy (0.917) where 64k lost a
# point for 5% more samples/s (bench/results/README.md).
CUDA_MIN_TOKENS = 32_768
EVAL_TOKEN_FACTOR = 4  # evaluation batches hold this many times the training token budget
MAX_LR_SCALE = 4.0  # cap on the square-root learning-rate scaling for larger batches
# torch.compile off by default on CUDA: each bucket shape recompiles, 903 against 4,846 samples/s
# eager on an H200 (bench/results/README.md).
COMPILE_ON_CUDA = False
_CACHE_SIZE = 4
_cache: dict[tuple, Encoded] = {}


@dataclass(frozen=True, eq=False)
class Encoded:
    """Token ids of many texts, tokenised once: a pad-filled [n, width] matrix and true lengths."""

    ids: np.ndarray
    lengths: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.lengths)


def encode(tokenizer: Any, texts: Sequence[str], *, max_length: int, chunk: int = 4096) -> Encoded:
    """Tokenise texts once without padding (fast tokenizer, batched); cached per process.

    Args:
        tokenizer: a Hugging Face tokenizer (a fast one is much quicker).
        texts: the reviews.
        max_length: tokens kept per text, special tokens included.
        chunk: texts per tokenizer call (bounds the Python lists held at once).

    Returns:
        The ids padded to the longest text's length rounded up to 64 (at most
        max_length), and each text's length.
    """
    texts = [str(t) for t in texts]
    key = _cache_key(tokenizer, texts, max_length)
    if key in _cache:
        return _cache[key]
    rows: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        rows += encode_ids(tokenizer, texts[start:start + chunk], max_length)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = min(_round_up(int(lengths.max(initial=1)), PAD_MULTIPLE["cuda"]), max_length)
    ids = np.full((len(rows), width), pad_id, dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    encoded = Encoded(ids, lengths, int(pad_id))
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[key] = encoded
    return encoded


def _cache_key(tokenizer: Any, texts: list[str], max_length: int) -> tuple:
    digest = hashlib.sha1(usedforsecurity=False)
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return (getattr(tokenizer, "name_or_path", ""), len(tokenizer), max_length, digest.hexdigest())


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_batches(lengths: np.ndarray, tokens_per_batch: int, width: int,
                 rng: np.random.Generator | None = None,
                 multiple: int = PAD_MULTIPLE["cuda"]) -> list[np.ndarray]:
    """Group rows into batches of similar length that hold about tokens_per_batch padded tokens.

    Args:
        lengths: each row's token count.
        tokens_per_batch: padded tokens per batch (batch size x padded length).
        width: the widest a batch may be padded to.
        rng: shuffles rows within each length bucket and the order of the batches; None keeps
            a deterministic order (for evaluation).
        multiple: a batch's length is its longest row's rounded up to this (PAD_MULTIPLE).

    Returns:
        Row indices per batch; every row appears exactly once.
    """
    padded = np.minimum(_round_up_array(lengths, multiple), width)
    batches: list[np.ndarray] = []
    for size in np.unique(padded):
        members = np.flatnonzero(padded == size)
        if rng is not None:
            members = rng.permutation(members)
        per_batch = max(1, tokens_per_batch // int(size))
        batches += np.array_split(members, math.ceil(len(members) / per_batch))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _round_up_array(values: np.ndarray, multiple: int) -> np.ndarray:
    return -(-np.asarray(values, dtype=np.int64) // multiple) * multiple


class _Batches:
    """The encoded rows on the training device once; batches are gathered there, not copied."""

    def __init__(self, encoded: Encoded, device: torch.device, sdpa: bool) -> None:
        pin = device.type == "cuda"
        self.ids = _to_device(torch.from_numpy(encoded.ids).long(), device, pin)
        self.lengths_host = encoded.lengths
        self.lengths = _to_device(torch.from_numpy(encoded.lengths), device, pin)
        self.device, self.sdpa = device, sdpa
        self.width = encoded.ids.shape[1]
        self.multiple = PAD_MULTIPLE["cpu" if device.type == "cpu" else "cuda"]

    def plan(self, tokens_per_batch: int, rng: np.random.Generator | None = None
             ) -> list[np.ndarray]:
        """plan_batches over these rows, padded to this device's multiple."""
        return plan_batches(self.lengths_host, tokens_per_batch, self.width, rng, self.multiple)

    def upload(self, plan: list[np.ndarray]) -> list[torch.Tensor]:
        """One host-to-device copy of an epoch's row indices, split into per-batch views."""
        flat = torch.from_numpy(np.concatenate(plan).astype(np.int64))
        flat = _to_device(flat, self.device, self.device.type == "cuda")
        return list(torch.split(flat, [len(b) for b in plan]))

    def inputs(self, rows_host: np.ndarray, rows: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """input_ids and an attention mask for one batch (None when nothing is padded)."""
        lengths = self.lengths_host[rows_host]
        size = min(_round_up(int(lengths.max()), self.multiple), self.width)
        ids = self.ids[rows, :size]
        if int(lengths.min()) == size:
            return {"input_ids": ids, "attention_mask": None}
        keep = torch.arange(size, device=self.device) < self.lengths[rows, None]
        # A 4-D boolean mask goes to SDPA as is: transformers skips its own mask building,
        # which would check the mask's contents on the host (a device sync) every step.
        mask = keep[:, None, None, :] if self.sdpa else keep.long()
        return {"input_ids": ids, "attention_mask": mask}


def _to_device(tensor: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    if pin:
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def train_fast(model: Any, tokenizer: Any, train_texts: Sequence[str], train_labels: Sequence[int],
               val_texts: Sequence[str], params: dict, *,
               max_length: int, seed: int,
               on_epoch: Callable[[int, np.ndarray], None] | None = None,
               device: str | None = None, progress: bool = False, compile: bool | None = None,
               positive_index: int = 1, frozen_layers: int = 0,
               on_step: Callable[[int, int], None] | None = None) -> Any:
    """Fine-tune a sequence classifier with length-bucketed token-budget batches.

    bf16 autocast (fp32 master weights) on CUDA and on CPUs with native bf16, fp32 on other
    CPUs; fused AdamW; on a CPU, no attention dropout (_cpu_dropouts). The last encoder layer
    computes only the first token's output where the head reads nothing else
    (fused_layers.first_token_last_layer). The
    learning rate is scaled by sqrt(mean batch / per_device_train_batch_size) (at most
    MAX_LR_SCALE times) when token-budget batches hold more reviews than that batch size.

    Args:
        model: a Hugging Face sequence-classification model with two labels.
        tokenizer: its tokenizer.
        train_texts: training reviews.
        train_labels: 0 negative, 1 positive.
        val_texts: validation reviews scored after every epoch (may be empty: no scoring).
        params: learning_rate, warmup_ratio, num_train_epochs, per_device_train_batch_size,
            weight_decay, and optionally tokens_per_batch (padded tokens per step).
        max_length: tokens kept per review.
        seed: seeds shuffling and dropout.
        on_epoch: on_epoch(epoch, validation positive-class probabilities), epochs from 1;
            whatever it raises (e.g. optuna.TrialPruned) propagates unchanged.
        device: "cuda", "cpu", ...; CUDA when available if None.
        progress: show a tqdm bar over the steps.
        compile: torch.compile the model; None means COMPILE_ON_CUDA on CUDA, off on a CPU.
        positive_index: the head's output index of the positive class.
        frozen_layers: the lowest layers kept as pretrained (see frozen_lower).
        on_step: on_step(step, reviews in that step) after every optimizer step (for timing).

    Returns:
        The trained model, in eval mode, on the device.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (checked every NAN_CHECK_EVERY steps).
        ConfigError: a parameter is unknown, missing or out of range (trainer.transformer.params),
            or texts and labels differ in number.
    """
    hp = _check_params(params, len(train_texts), len(train_labels))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    model.to(dev).train()
    with frozen_lower(model, frozen_layers), first_token_last_layer(model, tokenizer), \
            _cpu_dropouts(model, dev.type == "cpu"):
        _train(model, tokenizer, train_texts, train_labels, val_texts, hp, dev,
               max_length=max_length, seed=seed, on_epoch=on_epoch, progress=progress,
               compile=compile, positive_index=positive_index, on_step=on_step)
    return model.eval()


def _train(model: Any, tokenizer: Any, train_texts: Sequence[str], train_labels: Sequence[int],
           val_texts: Sequence[str], hp: dict[str, Any], dev: torch.device, *,
           max_length: int, seed: int, on_epoch: Callable[[int, np.ndarray], None] | None,
           progress: bool, compile: bool | None, positive_index: int,
           on_step: Callable[[int, int], None] | None) -> None:
    data = _Batches(encode(tokenizer, train_texts, max_length=max_length), dev, uses_sdpa(model))
    targets = _targets(train_labels, positive_index, dev)
    budget = _tokens_per_batch(hp, max_length, dev)
    rng = np.random.default_rng(seed)
    steps_per_epoch = len(data.plan(budget))
    lr = hp["learning_rate"] * _lr_scale(len(train_texts) / steps_per_epoch, hp)
    total = steps_per_epoch * hp["num_train_epochs"]
    optimizer, scheduler = make_optimizer(model, lr, hp, total, dev)
    loop = _Loop(data, targets, _compiled(model, dev, compile), optimizer, scheduler,
                 _autocast(dev), lr, _bar(total, progress), on_step)
    for epoch in range(1, hp["num_train_epochs"] + 1):
        loop.epoch(data.plan(budget, rng))
        if on_epoch is not None and len(val_texts):
            on_epoch(epoch, predict_fast(model, tokenizer, val_texts, max_length=max_length,
                                         positive_index=positive_index, device=str(dev),
                                         tokens_per_batch=budget * EVAL_TOKEN_FACTOR))
            model.train()
    loop.bar.close()


@contextlib.contextmanager
def _cpu_dropouts(model: Any, cpu: bool) -> Iterator[None]:
    """On a CPU, for a while: no dropout of the attention probabilities, and the other
    dropouts drawn from uniform numbers rather than Bernoulli draws.

    Measured on a MiniLM step of 16 x 256 tokens on 2 EPYC cores: the attention dropout's mask
    over every head's token-by-token matrix took 1 s of 2.2 s and keeps PyTorch's fused
    attention kernel from running; torch's Bernoulli draws cost 7.5 ns a value against 3 for
    uniform ones.
    """
    if not cpu:
        yield
        return
    attention, hidden = [], []
    for path, parent in model.named_modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Dropout and child.p > 0:
                # BERT, RoBERTa and DeBERTa name the attention probabilities' dropout so.
                is_attention = f"{path}.{name}".endswith("attention.self.dropout")
                (attention if is_attention else hidden).append((parent, name, child))
    for parent, name, child in attention:
        setattr(parent, name, torch.nn.Dropout(0.0))
    for parent, name, child in hidden:
        setattr(parent, name, UniformDropout(child.p))
    try:
        yield
    finally:
        for parent, name, child in attention + hidden:
            setattr(parent, name, child)


class UniformDropout(torch.nn.Module):
    """Dropout whose mask comes from uniform numbers: the same distribution as
    torch.nn.Dropout, 2.5x cheaper to draw on a CPU."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        scale = torch.rand(x.shape, device=x.device) >= self.p
        return x * scale.to(x.dtype).mul_(1.0 / (1.0 - self.p))


@contextlib.contextmanager
def frozen_lower(model: Any, count: int) -> Iterator[None]:
    """Keep the lowest `count` layers as pretrained for a while, counting the embeddings as the
    first: 1 freezes the embeddings (half of MiniLM's weights), 1 + k also the k lowest encoder
    layers. Their activations are then neither kept nor differentiated: `bench train` on 2 EPYC
    cores gave 12.8 samples/s with nothing frozen, 15.6 with the embeddings and 1 of MiniLM's 6
    layers (accuracy 0.799 and 0.789 on 1,000 reviews); the embeddings and 3 layers: 0.755.

    Raises:
        ConfigError: count is negative, leaves no encoder layer to train, or the model's layers
            cannot be found.
    """
    if count == 0:
        yield
        return
    layers = encoder_layers(model)
    embeddings = getattr(model.base_model, "embeddings", None)
    if layers is None or embeddings is None:
        raise ConfigError(f"cannot find the embeddings and encoder layers of "
                          f"{type(model).__name__} to freeze; set frozen_layers to 0")
    if not 0 <= count <= len(layers):
        raise ConfigError(f"frozen_layers must be between 0 and {len(layers)} for this model "
                          f"(the embeddings and {len(layers) - 1} of its {len(layers)} encoder "
                          f"layers at most), got {count}")
    frozen = [p for module in (embeddings, *layers[:count - 1]) for p in module.parameters()
              if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


@dataclass
class _Loop:
    """One optimizer step per batch; the loss stays on the device between finite checks."""

    data: _Batches
    targets: torch.Tensor
    forward: Any
    optimizer: Any
    scheduler: Any
    amp: Any
    lr: float
    bar: Any
    on_step: Callable[[int, int], None] | None
    step: int = 0

    def epoch(self, plan: list[np.ndarray]) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        loss_sum = torch.zeros((), device=self.data.device)
        for i, (rows_host, rows) in enumerate(zip(plan, self.data.upload(plan), strict=True)):
            with self.amp:
                logits = self.forward(**self.data.inputs(rows_host, rows)).logits
            loss = F.cross_entropy(logits.float(), self.targets[rows])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            self.step += 1
            if (i + 1) % NAN_CHECK_EVERY == 0 or i + 1 == len(plan):
                self._check_finite(loss_sum, i + 1)
            self.bar.update(1)
            if self.on_step is not None:
                self.on_step(self.step, len(rows_host))

    def _check_finite(self, loss_sum: torch.Tensor, count: int) -> None:
        value = float(loss_sum.item())  # the one host sync in NAN_CHECK_EVERY steps
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"training diverged: the loss became {value} by step {self.step} with learning "
                f"rate {self.lr:g}; expected a finite loss: lower the learning rate"
            )
        self.bar.set_postfix(loss=f"{value / count:.4f}", refresh=False)


def _check_params(params: dict, n_texts: int, n_labels: int) -> dict[str, Any]:
    hp = resolve(params, allowed=FAST_LOOP, fill_defaults=False)
    if n_texts != n_labels or n_texts == 0:
        raise ConfigError(f"expected one label per training text and at least one text, got "
                          f"{n_texts} texts and {n_labels} labels")
    return hp


def _targets(labels: Sequence[int], positive_index: int, device: torch.device) -> torch.Tensor:
    y = np.asarray(labels, dtype=np.int64)
    mapped = np.where(y == 1, positive_index, 1 - positive_index)
    return torch.from_numpy(mapped).to(device)


def _tokens_per_batch(hp: dict[str, Any], max_length: int, device: torch.device) -> int:
    if hp.get("tokens_per_batch"):
        return max(int(hp["tokens_per_batch"]), max_length)
    budget = hp["per_device_train_batch_size"] * max_length
    return max(budget, CUDA_MIN_TOKENS) if device.type == "cuda" else budget


def _lr_scale(mean_batch: float, hp: dict[str, Any]) -> float:
    ratio = mean_batch / hp["per_device_train_batch_size"]
    return min(math.sqrt(ratio), MAX_LR_SCALE) if ratio > 1 else 1.0


def make_optimizer(model: Any, lr: float, hp: dict[str, Any], total: int,
                   device: torch.device) -> tuple[torch.optim.AdamW, Any]:
    """AdamW (fused on CUDA and CPUs) and the linear warmup-then-decay schedule of train_fast.

    Args:
        model: the model whose trainable parameters are optimised.
        lr: the peak learning rate.
        hp: checked parameters (weight_decay and warmup_ratio are read).
        total: optimizer steps of the whole training.
        device: where the model is.

    Returns:
        The optimizer, and transformers' get_linear_schedule_with_warmup over `total` steps
        whose warmup is int(warmup_ratio * total) steps.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            # As the HF Trainer: no weight decay on biases and LayerNorm weights.
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": hp["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    # Fused on a CPU too: 9% more samples/s than the per-tensor loop (MiniLM, 2 EPYC cores).
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cuda", "cpu"))
    warmup = int(hp["warmup_ratio"] * total)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total)


def _compiled(model: Any, device: torch.device, compile: bool | None) -> Any:
    use = COMPILE_ON_CUDA if compile is None and device.type == "cuda" else bool(compile)
    # dynamic=None: the first recompile marks the changed dimension dynamic, so the few
    # bucket widths and batch sizes cost two or three compilations, not one each.
    return torch.compile(model) if use else model


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and native_bf16():
        # Emulated bf16 (AVX2 only) is slower than fp32: autocast only where the CPU has it.
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _bar(total: int, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not progress, desc="train", unit="step")


def predict_fast(model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int,
                 positive_index: int = 1, device: str | None = None,
                 tokens_per_batch: int = 65_536) -> np.ndarray:
    """Positive-class probabilities in large length-sorted batches (bf16 autocast as in training).

    Args:
        model: a sequence classifier.
        tokenizer: its tokenizer.
        texts: the reviews.
        max_length: tokens kept per review.
        positive_index: the head's output index of the positive class.
        device: where the model runs; its parameters' device when None.
        tokens_per_batch: padded tokens per forward pass.

    Returns:
        float64 probabilities in the order of texts.
    """
    dev = torch.device(device) if device else next(model.parameters()).device
    if not len(texts):
        return np.empty(0, dtype=np.float64)
    data = _Batches(encode(tokenizer, texts, max_length=max_length), dev, uses_sdpa(model))
    plan = data.plan(tokens_per_batch)
    out = torch.empty(len(texts), dtype=torch.float32, device=dev)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), _autocast(dev):
        for rows_host, rows in zip(plan, data.upload(plan), strict=True):
            logits = model(**data.inputs(rows_host, rows)).logits.float()
            out[rows] = torch.softmax(logits, dim=-1)[:, positive_index]
    model.train(was_training)
    return out.cpu().numpy().astype(np.float64)
