"""The fast fine-tuning loop on a tiny random BERT, on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.transformer import loop

PARAMS = {"learning_rate": 5e-3, "warmup_ratio": 0.1, "num_train_epochs": 2,
          "per_device_train_batch_size": 4, "weight_decay": 0.01}


def _task(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Separable reviews: positives say "wonderful" thrice, negatives "dreadful", among filler."""
    rng = np.random.default_rng(seed)
    filler = ["the", "a", "movie", "film", "plot", "actor", "scene", "story", "it", "was", "and"]
    labels = rng.integers(0, 2, n)
    texts = []
    for y in labels:
        words = list(rng.choice(filler, int(rng.integers(3, 40))))
        for _ in range(3):
            words.insert(int(rng.integers(0, len(words))), "wonderful" if y else "dreadful")
        texts.append(" ".join(words))
    return texts, labels


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from threads, and OpenMP threads thrash on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def clf(tiny_model_dir: str):
    from trainer.transformer.model import load_classifier

    return load_classifier(tiny_model_dir, device="cpu")


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((probs >= 0.5) == (labels == 1)))


def test_plan_batches_covers_every_row_once_within_the_token_budget() -> None:
    lengths = np.random.default_rng(0).integers(1, 513, 1000)
    plan = loop.plan_batches(lengths, 4096, 512, np.random.default_rng(1))
    rows = np.concatenate(plan)
    assert sorted(rows.tolist()) == list(range(1000))
    for batch in plan:
        width = min(-(-int(lengths[batch].max()) // 64) * 64, 512)
        assert len(batch) * width <= 4096
        assert int(lengths[batch].min()) > width - 64  # one bucket: at most 63 pad tokens a row


def test_encode_pads_to_a_multiple_of_64_and_keeps_true_lengths(clf) -> None:
    encoded = loop.encode(clf.tokenizer, ["short", "a bit longer review " * 40], max_length=100)
    assert encoded.ids.shape == (2, 100)  # 102 tokens round up to 128, capped at max_length
    assert encoded.lengths[0] == 3 and encoded.lengths[1] == 100
    assert (encoded.ids[0, 3:] == encoded.pad_id).all()


def test_predict_fast_matches_the_plain_padded_forward(clf) -> None:
    from trainer.transformer.model import predict_proba

    texts, _ = _task(40, seed=3)
    # In float64, so that only a real difference shows: in fp32 the two paths' padding widths
    # pick different kernels, which moved a tiny random model's probabilities by 3.3e-5 on an
    # AMD EPYC, twice their spread across these reviews.
    clf.model.double()
    plain = predict_proba(clf, texts, max_length=64, batch_size=7)
    fast = loop.predict_fast(clf.model, clf.tokenizer, texts, max_length=64, tokens_per_batch=512)
    np.testing.assert_allclose(fast, plain, atol=1e-7)  # fast returns float32 probabilities


def test_train_fast_reports_each_epoch_and_learns_a_separable_task(clf) -> None:
    texts, labels = _task(320, seed=1)
    val_texts, val_labels = _task(48, seed=2)
    before = loop.predict_fast(clf.model, clf.tokenizer, val_texts, max_length=64)
    calls: list[tuple[int, np.ndarray]] = []
    model = loop.train_fast(clf.model, clf.tokenizer, texts, labels, val_texts, PARAMS,
                            max_length=64, seed=0, on_epoch=lambda e, p: calls.append((e, p)))
    assert [epoch for epoch, _ in calls] == [1, 2]
    for _, probs in calls:
        assert probs.shape == (48,) and np.isfinite(probs).all()
        assert ((probs >= 0) & (probs <= 1)).all()
    assert not model.training
    assert _accuracy(calls[-1][1], val_labels) >= 0.9 > _accuracy(before, val_labels)


def test_train_fast_maps_labels_to_the_positive_index(clf) -> None:
    texts, labels = _task(320, seed=4)
    # Seed 1: at this learning rate the tiny random model collapses to one answer for 1 seed in
    # 6 (seed 0 among them since the CPU loop draws dropout otherwise), whatever the mapping.
    loop.train_fast(clf.model, clf.tokenizer, texts, labels, [], PARAMS, max_length=64,
                    seed=1, positive_index=0)
    probs = loop.predict_fast(clf.model, clf.tokenizer, texts, max_length=64, positive_index=0)
    assert _accuracy(probs, labels) >= 0.9


def test_an_error_raised_in_on_epoch_propagates_unchanged(clf) -> None:
    class Pruned(Exception):
        pass

    calls = []

    def prune(epoch: int, probs: np.ndarray) -> None:
        calls.append(epoch)
        raise Pruned

    texts, labels = _task(32, seed=5)
    with pytest.raises(Pruned):
        loop.train_fast(clf.model, clf.tokenizer, texts, labels, texts[:8], PARAMS,
                        max_length=64, seed=0, on_epoch=prune)
    assert calls == [1]


def test_a_nan_loss_raises_training_diverged(clf) -> None:
    from trainer.errors import TrainingDiverged

    with torch.no_grad():
        clf.model.classifier.weight.fill_(float("nan"))
    texts, labels = _task(32, seed=6)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        loop.train_fast(clf.model, clf.tokenizer, texts, labels, [], PARAMS, max_length=64,
                        seed=0)


def test_missing_parameters_are_named(clf) -> None:
    from trainer.errors import ConfigError

    with pytest.raises(ConfigError, match="warmup_ratio"):
        loop.train_fast(clf.model, clf.tokenizer, ["x"], [1], [], {"learning_rate": 1e-3,
                        "num_train_epochs": 1, "per_device_train_batch_size": 1,
                        "weight_decay": 0.0}, max_length=16, seed=0)


def test_unknown_parameters_are_refused(clf) -> None:
    from trainer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown fine-tuning parameters \['dropout'\]"):
        loop.train_fast(clf.model, clf.tokenizer, ["x"], [1], [], {**PARAMS, "dropout": 0.1},
                        max_length=16, seed=0)


def test_tokens_per_batch_sets_the_reviews_per_step(clf) -> None:
    texts, labels = _task(32, seed=7)
    texts = [f"{text} {'film ' * 70}" for text in texts]  # all cut to 64 tokens: one bucket
    steps: list[int] = []
    loop.train_fast(clf.model, clf.tokenizer, texts, labels, [],
                    {**PARAMS, "num_train_epochs": 1, "tokens_per_batch": 512.0}, max_length=64,
                    seed=0, on_step=lambda step, n: steps.append(n))
    assert steps == [8, 8, 8, 8]  # 512 tokens / 64 per review


def _lrs(optimizer: torch.optim.Optimizer, scheduler, total: int) -> list[float]:
    """The learning rate each of `total` optimizer steps uses."""
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_the_schedule_is_transformers_linear_warmup_then_decay(clf) -> None:
    from transformers import get_linear_schedule_with_warmup

    lr, total, ratio = 1e-3, 50, 0.13
    warmup = 6  # int(0.13 * 50): the warmup is the whole steps of warmup_ratio * total
    optimizer, scheduler = loop.make_optimizer(clf.model, lr, {**PARAMS, "warmup_ratio": ratio},
                                               total, torch.device("cpu"))
    ours = _lrs(optimizer, scheduler, total)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    library = _lrs(reference, get_linear_schedule_with_warmup(reference, warmup, total), total)

    assert ours[0] == library[0] == 0.0  # step 0: the warmup starts from zero
    assert ours[warmup - 1] == pytest.approx(lr * (warmup - 1) / warmup)
    assert ours[warmup] == pytest.approx(library[warmup]) == pytest.approx(lr)  # warmup ends
    assert ours[-1] == pytest.approx(library[-1]) == pytest.approx(lr / (total - warmup))
    assert ours == pytest.approx(library, abs=1e-12)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [PARAMS["weight_decay"], 0.0]


def _loss_and_grads(model, ids: torch.Tensor, keep: torch.Tensor) -> tuple[float, list]:
    from trainer.transformer.fused_layers import padding_mask
    from trainer.transformer.model import uses_sdpa

    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids, attention_mask=padding_mask(keep, uses_sdpa(model))).logits
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1]))
    loss.backward()
    return float(loss.detach()), [None if p.grad is None else p.grad.clone()
                                  for p in model.parameters()]


def test_the_first_token_last_layer_trains_as_the_whole_layer(clf) -> None:
    from trainer.transformer.fused_layers import FirstTokenLayer, first_token_last_layer

    model = clf.model.double().eval()  # eval: no dropout, so both passes are deterministic
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 5000, (3, 23), generator=gen)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[0, 11:] = False
    last = model.base_model.encoder.layer[-1]
    want_loss, want = _loss_and_grads(model, ids, keep)
    with first_token_last_layer(model, clf.tokenizer) as cut:
        assert cut and isinstance(model.base_model.encoder.layer[-1], FirstTokenLayer)
        got_loss, got = _loss_and_grads(model, ids, keep)
    assert model.base_model.encoder.layer[-1] is last
    assert got_loss == pytest.approx(want_loss, abs=1e-12)
    assert len(got) == len(want) and all(g is not None for g in want)  # the same parameters
    for i, (grad, wanted) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(grad, wanted, atol=1e-12, rtol=1e-9, msg=f"parameter {i}")


def test_a_head_reading_every_token_keeps_the_whole_last_layer(clf) -> None:
    from trainer.transformer.fused_layers import first_token_last_layer

    head = clf.model.classifier
    clf.model.bert.pooler = None  # the head below reads the mean of every token instead

    class MeanHead(torch.nn.Module):
        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return head(hidden.mean(dim=1))

    clf.model.classifier, clf.model.dropout = MeanHead(), torch.nn.Identity()
    last = clf.model.base_model.encoder.layer[-1]
    with first_token_last_layer(clf.model, clf.tokenizer) as cut:
        assert not cut and clf.model.base_model.encoder.layer[-1] is last


def test_frozen_layers_keep_the_embeddings_and_lowest_layers_as_pretrained(clf) -> None:
    texts, labels = _task(64, seed=6)
    before = {n: p.detach().clone() for n, p in clf.model.named_parameters()}
    loop.train_fast(clf.model, clf.tokenizer, texts, labels, [], PARAMS, max_length=64, seed=0,
                    frozen_layers=2)
    for name, p in clf.model.named_parameters():
        frozen = name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
        assert torch.equal(p, before[name]) == frozen, name
        assert p.requires_grad  # given back trainable


@pytest.mark.parametrize("count", [-1, 3])
def test_frozen_layers_beyond_the_model_are_refused(clf, count: int) -> None:
    from trainer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"between 0 and 2 .*got " + str(count)):
        with loop.frozen_lower(clf.model, count):
            pass


def test_cpu_training_draws_no_attention_dropout_and_cheaper_hidden_dropout(clf) -> None:
    dropouts = {n: m.p for n, m in clf.model.named_modules() if isinstance(m, torch.nn.Dropout)}
    with loop._cpu_dropouts(clf.model, True):
        inside = {n: m for n, m in clf.model.named_modules() if n in dropouts}
        for name, module in inside.items():
            if name.endswith("attention.self.dropout"):
                assert module.p == 0.0, name
            else:
                assert isinstance(module, loop.UniformDropout) and module.p == dropouts[name]
    assert {n: m.p for n, m in clf.model.named_modules()
            if isinstance(m, torch.nn.Dropout)} == dropouts  # the model's own, given back


def test_uniform_dropout_drops_its_share_and_keeps_the_mean() -> None:
    drop = loop.UniformDropout(0.25)
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = drop(x)
    assert float((y == 0).float().mean()) == pytest.approx(0.25, abs=0.005)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))
    assert float(y.mean()) == pytest.approx(1.0, abs=0.01)
    assert torch.equal(drop.eval()(x), x)
