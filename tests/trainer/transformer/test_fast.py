"""FastClassifier: CPU scoring that agrees with the eager model and keeps the input order."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.transformer.fast import FastClassifier

REVIEWS = [
    "A wonderful film.",
    "Dreadful acting, a plot full of holes and a score that never stops " * 6,
    "ok",
    "I laughed, I cried, I want my money back. " * 3,
    "",
    "The best thing about it is the popcorn. " * 12,
    "Mixed feelings: strong start, weak end.",
]


@pytest.fixture(scope="module")
def clf(tiny_model_dir: str):
    """The tiny random classifier as saved: every logit gap is near -0.02."""
    from trainer.transformer.model import load_classifier

    return load_classifier(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def spread(tiny_model_dir: str):
    """The tiny classifier with a head along its reviews' main direction of variation.

    A random tiny BERT gives nearly the same score to every review, which would hide a review
    getting another's score; this head spreads the scores over (0.04, 0.98) instead.
    """
    from trainer.transformer.model import load_classifier

    return _spread(load_classifier(tiny_model_dir, device="cpu"))


@pytest.fixture(scope="module")
def deberta(tiny_model_dir_factory):
    """A tiny DeBERTa-v2 classifier (eager attention, relative positions), its scores spread."""
    from trainer.transformer.model import load_classifier

    return _spread(load_classifier(tiny_model_dir_factory("tiny-deberta", deberta=True),
                                   device="cpu"))


def _spread(loaded):
    """loaded with its head set along the main direction of variation of the head's inputs."""
    features = []
    hook = loaded.model.classifier.register_forward_pre_hook(
        lambda module, args: features.append(args[0]))
    with torch.inference_mode():
        loaded.model(**loaded.tokenizer(REVIEWS, padding=True, return_tensors="pt"))
    hook.remove()
    pooled = features[0]
    centred = pooled - pooled.mean(0)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    scale = 4.0 / float((centred @ direction).abs().max())
    with torch.no_grad():
        head = loaded.model.classifier
        head.weight.copy_(torch.stack([-direction, direction]) * scale / 2)
        head.bias.copy_(torch.tensor([1.0, -1.0]) * float(pooled.mean(0) @ direction) * scale / 2)
    return loaded


def _eager(clf, texts: list[str]) -> np.ndarray:
    from trainer.transformer.model import predict_proba

    return predict_proba(clf, texts, max_length=64, batch_size=1)  # one by one: no padding


def test_fp32_scores_equal_the_eager_model_in_the_input_order(spread) -> None:
    fast = FastClassifier.from_classifier(spread, max_length=64, method="fp32")
    eager = _eager(spread, REVIEWS)
    assert eager.max() - eager.min() > 0.5  # distinct scores: a swap would show
    # Same weights and arithmetic; only padding within sorted batches differs.
    np.testing.assert_allclose(fast.predict_proba(REVIEWS, batch_size=3), eager, atol=1e-5)


def test_deberta_keeps_its_layers_and_is_traced(deberta) -> None:
    from trainer.transformer.fused_layers import OneDNNLinear

    fast = FastClassifier.from_classifier(deberta, max_length=64, method="fp32")
    assert fast.graphs is not None and not fast.sdpa  # eager attention: a 2-D padding mask
    assert type(fast.model.base_model.encoder.layer[-1]).__name__ == "DebertaV2Layer"
    # Its Linear layers still get packed weights where torch has oneDNN.
    linears = [m for m in fast.model.modules() if isinstance(m, torch.nn.Linear | OneDNNLinear)]
    assert (all(isinstance(m, OneDNNLinear) for m in linears)
            is torch.backends.mkldnn.is_available())
    eager = _eager(deberta, REVIEWS)
    assert eager.max() - eager.min() > 0.5  # distinct scores: a swap would show
    np.testing.assert_allclose(fast.predict_proba(REVIEWS, batch_size=3), eager, atol=1e-5)


@pytest.mark.parametrize("method", ["int8", "bf16"])
def test_reduced_precision_scores_stay_close_to_the_eager_model(clf, method: str) -> None:
    fast = FastClassifier.from_classifier(clf, max_length=64, method=method)
    assert fast.method == method and fast.graphs is not None
    eager = _eager(clf, REVIEWS)
    ours = fast.predict_proba(REVIEWS)
    # int8 rounds each weight and activation to 1/255 of its range, bf16 each value to 1/256 of
    # itself; summed over the dozen Linear layers that moves this model's logit gap (about
    # 0.02) by a few percent of it at most: under 1e-3 (observed: 1e-4).
    gap_eager, gap_ours = np.log(eager / (1 - eager)), np.log(ours / (1 - ours))
    np.testing.assert_allclose(gap_ours, gap_eager, atol=1e-3)
    assert fast.predict_proba(REVIEWS).tolist() == ours.tolist()  # deterministic


def test_scores_follow_their_reviews_when_the_order_changes(spread) -> None:
    fast = FastClassifier.from_classifier(spread, max_length=64, method="fp32")
    perm = np.random.default_rng(0).permutation(len(REVIEWS))
    whole = fast.predict_proba(REVIEWS, batch_size=2)
    shuffled = fast.predict_proba([REVIEWS[i] for i in perm], batch_size=2)
    alone = [fast.predict_proba([text])[0] for text in REVIEWS]
    # Padding (masked) changes the float summation order only: 1e-5, far below the 0.01 that
    # separates the two closest scores.
    np.testing.assert_allclose(shuffled, whole[perm], atol=1e-5)
    np.testing.assert_allclose(alone, whole, atol=1e-5)


def test_int8_scores_a_review_the_same_alone_or_in_a_batch(clf) -> None:
    fast = FastClassifier.from_classifier(clf, max_length=64, method="int8")
    whole = fast.predict_proba(REVIEWS, batch_size=4)
    alone = [fast.predict_proba([text])[0] for text in REVIEWS]
    # int8 scales activations per batch, so neighbours may move a score, within the bound above.
    np.testing.assert_allclose(alone, whole, atol=2.5e-4)


@pytest.mark.parametrize(("flags", "full_range"), [({"avx512_vnni"}, True), ({"avx2"}, False)])
def test_int8_keeps_8_bit_activations_only_where_vnni_makes_it_safe(
        clf, monkeypatch: pytest.MonkeyPatch, flags: set, full_range: bool) -> None:
    from trainer.transformer import fast as inference

    monkeypatch.setattr(inference, "_cpu_flags", lambda: flags)
    fast = FastClassifier.from_classifier(clf, max_length=64, method="int8")
    layer = fast.model.bert.encoder.layer[0].up
    assert isinstance(layer, inference._FullRangeLinear) is full_range
    assert layer.weight().qscheme() == torch.per_channel_affine


@pytest.mark.parametrize(("flags", "method"), [({"avx512_bf16", "avx512_vnni"}, "bf16"),
                                               ({"amx_bf16"}, "bf16"), ({"avx512_vnni"}, "int8"),
                                               ({"avx2"}, "int8")])
def test_auto_takes_bf16_only_on_cpus_that_compute_in_bf16(
        clf, monkeypatch: pytest.MonkeyPatch, flags: set, method: str) -> None:
    from trainer.transformer import fast as inference

    monkeypatch.setattr(inference, "_cpu_flags", lambda: flags)
    assert FastClassifier.from_classifier(clf, max_length=64).method == method


def test_the_source_classifier_is_left_unchanged(clf) -> None:
    before = _eager(clf, REVIEWS)
    FastClassifier.from_classifier(clf, max_length=64, method="int8")
    assert type(clf.model.classifier) is torch.nn.Linear
    np.testing.assert_array_equal(_eager(clf, REVIEWS), before)


def test_no_reviews_give_no_scores_and_a_bad_method_is_named(clf) -> None:
    fast = FastClassifier.from_classifier(clf, max_length=64)
    assert fast.method in ("bf16", "int8", "fp32")
    assert fast.predict_proba([]).shape == (0,)
    with pytest.raises(ValueError, match="onnx"):
        FastClassifier.from_classifier(clf, max_length=64, method="onnx")


@pytest.mark.parametrize("method", ["fp32", "int8", "bf16"])
def test_bert_layers_are_fused_and_the_last_reads_the_first_token_only(spread, method: str
                                                                        ) -> None:
    from trainer.transformer.fused_layers import FastLayer, OneDNNLinear, onednn_runs

    fast = FastClassifier.from_classifier(spread, max_length=64, method=method)
    layers = fast.model.base_model.encoder.layer
    assert all(isinstance(layer, FastLayer) for layer in layers)
    assert [layer.first_only for layer in layers] == [False] * (len(layers) - 1) + [True]
    assert not isinstance(spread.model.base_model.encoder.layer[-1], FastLayer)
    # Where torch has oneDNN (x86 and ARM builds), fp32 products use packed weights; bf16 ones
    # only where oneDNN computes bf16 right (not on this AMD EPYC without native bf16).
    dtype = torch.bfloat16 if method == "bf16" else torch.float32
    packed = method != "int8" and onednn_runs(dtype)
    if method == "fp32":
        assert packed is torch.backends.mkldnn.is_available()
    assert all(isinstance(getattr(layer, name), OneDNNLinear) is packed
               for layer in layers for name in ("projection", "out", "up", "down"))
    # The scores it gives: test_fp32_scores_equal_the_eager_model_in_the_input_order (padded
    # batches and not) and test_reduced_precision_scores_stay_close_to_the_eager_model.


@pytest.mark.parametrize("act", [None, torch.nn.GELU(), torch.nn.GELU(approximate="tanh"),
                                 torch.nn.ReLU(), "transformers-gelu"])
@pytest.mark.parametrize("residual", [False, True])
def test_packed_products_compute_what_plain_linear_layers_do(act, residual: bool) -> None:
    from transformers.activations import GELUActivation

    from trainer.transformer.fused_layers import OneDNNLinear, _linear, onednn_runs

    act = GELUActivation() if act == "transformers-gelu" else act
    assert onednn_runs(torch.float32) is torch.backends.mkldnn.is_available()
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn((2, 5, 16), generator=gen)
    other = torch.randn((2, 5, 24), generator=gen) if residual else None
    plain = torch.nn.Linear(16, 24)
    with torch.no_grad():
        plain.weight.copy_(torch.randn((24, 16), generator=gen) / 4)
    with torch.inference_mode():
        want = plain(x) if act is None else act(plain(x))
        want = want if other is None else want + other
        for linear in (plain, OneDNNLinear(plain)):
            torch.testing.assert_close(_linear(linear, x, act, other), want, atol=1e-5, rtol=0)
    # Values this large tell exact GELU from its tanh form: taking one for the other would show.
    exact, tanh = torch.nn.GELU(), torch.nn.GELU(approximate="tanh")
    assert (exact(plain(x)) - tanh(plain(x))).abs().max() > 1e-4


class _MeanPooler(torch.nn.Module):
    """A head that reads every token: cutting the last layer to the first token would change it."""

    def __init__(self, pooler: torch.nn.Module) -> None:
        super().__init__()
        self.pooler = pooler

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.pooler(hidden.mean(dim=1, keepdim=True))


def test_a_head_reading_every_token_keeps_the_full_last_layer(tiny_model_dir: str) -> None:
    from trainer.transformer.fused_layers import FastLayer
    from trainer.transformer.model import load_classifier

    clf = load_classifier(tiny_model_dir, device="cpu")
    clf.model.bert.pooler = _MeanPooler(clf.model.bert.pooler)
    fast = FastClassifier.from_classifier(clf, max_length=64, method="fp32")
    layers = fast.model.base_model.encoder.layer
    assert all(isinstance(layer, FastLayer) and not layer.first_only for layer in layers)
    # One by one: this mean also counts padding, so a padded batch would score otherwise.
    np.testing.assert_allclose(fast.predict_proba(REVIEWS, batch_size=1), _eager(clf, REVIEWS),
                               atol=1e-5)


def test_preparing_logs_no_transformers_loss_warning(clf) -> None:
    import logging

    from transformers.utils import logging as hf_logging

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("transformers")
    hf_logging.warning_once.cache_clear()  # once per process: an earlier test may have had it
    logger.addHandler(handler)
    try:
        FastClassifier.from_classifier(clf, max_length=64, method="fp32")
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "loss_type" in m]  # tracing reads loss_function; we score


def _tokens(clf, texts: list[str], max_length: int) -> int:
    return sum(len(row) for row in clf.tokenizer(texts, truncation=True,
                                                 max_length=max_length)["input_ids"])


def test_preparing_is_worth_it_from_the_threshold_in_tokens_on(clf) -> None:
    from trainer.transformer.fast import worth_preparing

    texts = REVIEWS * 50  # more than one counting chunk
    total = _tokens(clf, texts, 32)
    assert worth_preparing(clf.tokenizer, texts, 32, min_tokens=total)
    assert not worth_preparing(clf.tokenizer, texts, 32, min_tokens=total + 1)
    assert not worth_preparing(clf.tokenizer, [], 32, min_tokens=1)


def test_little_work_is_scored_eagerly_exactly(spread) -> None:
    from trainer.transformer.fast import WorkSizedScorer
    from trainer.transformer.model import predict_proba

    scorer = WorkSizedScorer(spread, max_length=64, min_tokens=_tokens(spread, REVIEWS, 64) + 1)
    scores = scorer.predict_proba(REVIEWS)
    assert scorer.fast is None
    np.testing.assert_array_equal(scores, predict_proba(spread, REVIEWS, max_length=64))


def test_enough_work_prepares_the_fast_path_once_and_keeps_it(spread) -> None:
    from trainer.transformer.fast import WorkSizedScorer

    scorer = WorkSizedScorer(spread, max_length=64, min_tokens=_tokens(spread, REVIEWS, 64),
                             method="fp32")
    np.testing.assert_allclose(scorer.predict_proba(REVIEWS), _eager(spread, REVIEWS),
                               atol=1e-4)
    prepared = scorer.fast
    assert isinstance(prepared, FastClassifier)
    scorer.predict_proba(REVIEWS[:1])  # too little work alone, but the preparation is paid
    assert scorer.fast is prepared
