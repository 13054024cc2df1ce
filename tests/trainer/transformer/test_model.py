"""Tests for trainer.transformer (loading, label mapping, prediction, explanations) and
trainer.transformer.finetune (fine-tuning).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from trainer.errors import ConfigError, ModelError, TrainingDiverged
from trainer.explanation import Contribution
from trainer.transformer import finetune
from trainer.transformer import model as transformer
from trainer.transformer.attribution import explain
from trainer.transformer.params import resolve as resolve_params

POSITIVE_WORDS = ["great", "wonderful", "brilliant", "moving", "superb", "delightful"]
NEGATIVE_WORDS = ["awful", "boring", "dreadful", "terrible", "dull", "clumsy"]
REVIEWS = [
    "A wonderful film.",
    "",
    "Terrible acting, a boring and dreadful plot that never ends and never gets better at all.",
    "Okay.",
    "Thé cinématographie était superbe, unbelievably moving!",
    "I did not like it",
    "Brilliant brilliant brilliant " * 20,
    "meh",
    "Great cast; awful script.",
    "The best movie I have seen this year, by far.",
]


def synthetic_reviews(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Short reviews whose label is given by the sentiment words they contain."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.choice(POSITIVE_WORDS if label else NEGATIVE_WORDS, size=3)
        texts.append(f"The film was {words[0]} and {words[1]}, truly {words[2]}.")
        labels.append(label)
    return texts, labels


PARAMS = {"learning_rate": 5e-4, "warmup_ratio": 0.1, "num_train_epochs": 2,
          "per_device_train_batch_size": 8, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def clf(tiny_model_dir: str) -> transformer.Classifier:
    return transformer.load_classifier(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def tuned(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One fine-tuning run shared by the tests that only inspect its result."""
    train_texts, train_labels = synthetic_reviews(32)
    val_texts, val_labels = synthetic_reviews(10, seed=1)
    calls: list[tuple[int, np.ndarray]] = []
    work = tmp_path_factory.mktemp("work")
    trained = finetune.fine_tune(
        tiny_model_dir, train_texts, train_labels, val_texts, val_labels, PARAMS,
        max_length=32, output_dir=work, seed=0, device="cpu",
        on_epoch=lambda epoch, probs: calls.append((epoch, probs.copy())),
    )
    return {"clf": trained, "calls": calls, "val_texts": val_texts, "work": work}


# --- resolving and loading -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["minilm-offline", "MiniLM-Offline"])
def test_resolve_model_maps_offline_name_to_packaged_directory(name: str) -> None:
    assert (Path(transformer.resolve_model(name)) / "config.json").is_file()


def test_resolve_model_leaves_other_names_unchanged() -> None:
    assert transformer.resolve_model("org/some-model") == "org/some-model"


def test_load_classifier_reads_saved_sentiment_model(clf: transformer.Classifier) -> None:
    assert (clf.positive_index, clf.new_head, clf.device) == (1, False, "cpu")
    assert not clf.model.training


LABELS = [
    ({0: "LABEL_0", 1: "LABEL_1"}, 1),
    ({0: "NEGATIVE", 1: "POSITIVE"}, 1),
    ({0: "POSITIVE", 1: "NEGATIVE"}, 0),
    ({0: "neg", 1: "pos"}, 1),
    ({0: "Pos", 1: "Neg"}, 0),
    ({"0": "negative", "1": "positive"}, 1),
    ({0: "0", 1: "1"}, 1),
    ({0: " label_1 ", 1: "Label_0"}, 0),
]


@pytest.mark.parametrize(("id2label", "expected"), LABELS)
def test_label_index_finds_positive_class(id2label: dict, expected: int) -> None:
    assert transformer.label_index(id2label) == expected


@pytest.mark.parametrize("id2label", [
    {0: "joy", 1: "anger"},
    {0: "positive", 1: "pos"},
    {0: "negative", 1: "LABEL_0"},
    {0: "negative", 1: "neutral", 2: "positive"},
    {0: "POSITIVE"},
])
def test_label_index_rejects_labels_that_are_not_negative_and_positive(id2label: dict) -> None:
    with pytest.raises(ModelError, match="expected a binary sentiment model") as info:
        transformer.label_index(id2label)
    assert str(next(iter(id2label.values()))) in str(info.value)


def test_load_classifier_rejects_model_with_unmappable_labels(tiny_model_dir_factory) -> None:
    path = tiny_model_dir_factory("emotions", id2label={0: "joy", 1: "anger"})
    with pytest.raises(ModelError, match="joy"):
        transformer.load_classifier(path)


def test_load_classifier_rejects_three_label_model(tiny_model_dir_factory) -> None:
    path = tiny_model_dir_factory(
        "three", num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"})
    with pytest.raises(ModelError, match="neutral"):
        transformer.load_classifier(path)


def test_load_classifier_uses_positive_index_of_reversed_labels(tiny_model_dir_factory) -> None:
    path = tiny_model_dir_factory("reversed", id2label={0: "POSITIVE", 1: "NEGATIVE"})
    reversed_clf = transformer.load_classifier(path, device="cpu")
    inputs = reversed_clf.tokenizer(["A wonderful film."], return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(reversed_clf.model(**inputs).logits, -1)[0, 0].item()
    probs = transformer.predict_proba(reversed_clf, ["A wonderful film."], max_length=32)
    assert reversed_clf.positive_index == 0
    assert probs[0] == pytest.approx(expected, abs=1e-6)


def test_encoder_without_head_loads_with_new_head(tmp_path: Path, tiny_model_dir: str) -> None:
    config = transformers.AutoConfig.from_pretrained(tiny_model_dir)
    transformers.BertModel(config).save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    bare = transformer.load_classifier(str(tmp_path), device="cpu")
    assert (bare.new_head, bare.positive_index) == (True, 1)
    assert bare.model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}


def test_a_headless_checkpoint_scores_a_review_the_same_on_every_load(headless_dir: str) -> None:
    scores = [transformer.predict_proba(transformer.load_classifier(headless_dir, device="cpu"),
                                        REVIEWS, max_length=32) for _ in range(2)]
    np.testing.assert_array_equal(scores[0], scores[1])


def test_the_seed_draws_the_new_head_and_leaves_the_global_rng_alone(headless_dir: str) -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    heads = [transformer.load_classifier(headless_dir, device="cpu", seed=seed).model.classifier
             for seed in (1, 1, 2)]
    assert torch.equal(torch.rand(3), expected)  # loading drew nothing from the global RNG
    assert torch.equal(heads[0].weight, heads[1].weight)
    assert not torch.equal(heads[0].weight, heads[2].weight)


def test_generic_label_names_are_read_with_a_stated_assumption(tiny_model_dir_factory,
                                                              clf: transformer.Classifier) -> None:
    generic = transformer.load_classifier(
        tiny_model_dir_factory("generic", id2label={0: "LABEL_0", 1: "LABEL_1"}), device="cpu")
    (note,) = generic.notes
    assert generic.positive_index == 1
    assert "assumed LABEL_1 = positive" in note and "ROC AUC is below 0.5" in note
    assert clf.notes == ()  # NEGATIVE/POSITIVE names need no assumption


@pytest.fixture(scope="module")
def generic_scored(tiny_model_dir_factory) -> tuple[transformer.Classifier, np.ndarray]:
    """A LABEL_0/LABEL_1 tiny model and its scores of 240 reviews."""
    texts = [f"{REVIEWS[i % len(REVIEWS)]} take {i}" for i in range(240)]
    path = tiny_model_dir_factory("generic-scored", id2label={0: "LABEL_0", 1: "LABEL_1"})
    generic = transformer.load_classifier(path, device="cpu")
    return generic, transformer.predict_proba(generic, texts, max_length=32)


def test_labels_that_look_reversed_are_warned_about(
        generic_scored: tuple[transformer.Classifier, np.ndarray]) -> None:
    generic, probs = generic_scored
    # The truth for which this model's index 0 is the positive class: its LABEL_1 scores rank
    # the reviews backwards.
    truth = (probs < np.median(probs)).astype(int)
    note, warning = transformer.label_warnings(generic, probs, truth)
    assert note == generic.notes[0]
    assert "look reversed: ROC AUC 0.000 < 0.5 on 240 reviews" in warning
    assert "index 1 (LABEL_1) as positive" in warning


def test_labels_are_not_called_reversed_when_ranked_right_or_on_few_reviews(
        generic_scored: tuple[transformer.Classifier, np.ndarray]) -> None:
    generic, probs = generic_scored
    right = (probs >= np.median(probs)).astype(int)
    backwards = 1 - right
    assert transformer.label_warnings(generic, probs, right) == generic.notes
    few = transformer.REVERSED_MIN_REVIEWS - 1
    assert transformer.label_warnings(generic, probs[:few], backwards[:few]) == generic.notes


def test_a_new_head_gets_no_label_warnings(headless_dir: str) -> None:
    bare = transformer.load_classifier(headless_dir, device="cpu")
    labels = np.arange(300) % 2
    assert bare.notes == ()
    assert transformer.label_warnings(bare, 1.0 - labels, labels) == ()


def test_minilm_offline_has_no_sentiment_head() -> None:
    minilm = transformer.load_classifier("minilm-offline", device="cpu")
    assert minilm.new_head and minilm.name == "minilm-offline"


def test_directory_with_only_pickle_weights_is_refused(tmp_path: Path,
                                                       tiny_model_dir: str) -> None:
    (tmp_path / "config.json").write_text(Path(tiny_model_dir, "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelError, match="pickle"):
        transformer.load_classifier(str(tmp_path))


def test_pickle_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="pickle file"):
        transformer.load_classifier(str(path))


def test_directory_without_config_is_refused_naming_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="notes.txt"):
        transformer.load_classifier(str(tmp_path))


def test_missing_local_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        transformer.load_classifier(str(tmp_path / "nowhere"))


def test_offline_hub_id_names_the_local_alternatives() -> None:
    with pytest.raises(ModelError) as info:
        transformer.load_classifier("some-org/some-sentiment-model")
    message = str(info.value)
    assert "some-org/some-sentiment-model" in message and "Hugging Face hub" in message
    assert "--model DIR" in message and "--model minilm-offline" in message
    assert "\n" not in message


# --- prediction ------------------------------------------------------------------------------

def test_predict_proba_returns_probabilities_in_input_order(clf: transformer.Classifier) -> None:
    probs = transformer.predict_proba(clf, REVIEWS, max_length=64, batch_size=3)
    one_by_one = [transformer.predict_proba(clf, [t], max_length=64)[0] for t in REVIEWS]
    assert probs.shape == (len(REVIEWS),)
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs, one_by_one, atol=1e-5)


def test_predict_proba_is_the_same_for_batch_sizes_1_and_8(clf: transformer.Classifier) -> None:
    single = transformer.predict_proba(clf, REVIEWS, max_length=64, batch_size=1)
    batched = transformer.predict_proba(clf, REVIEWS, max_length=64, batch_size=8)
    np.testing.assert_allclose(single, batched, atol=1e-5)
    assert np.ptp(single) > 0  # the texts really differ in the model's eyes


def test_predict_proba_of_no_texts_is_empty(clf: transformer.Classifier) -> None:
    assert transformer.predict_proba(clf, [], max_length=64).shape == (0,)


def test_predict_proba_keeps_the_head_and_tail_of_a_long_review(
        clf: transformer.Classifier) -> None:
    text = "good " * 20 + "fine " * 100 + "bad " * 100
    cut = transformer.predict_proba(clf, [text], max_length=12)
    # 12 tokens: [CLS], a quarter of the other 10 from the head, the rest from the tail, [SEP]
    kept = transformer.predict_proba(clf, ["good " * 2 + "bad " * 8], max_length=12)
    np.testing.assert_allclose(cut, kept, atol=1e-6)


# --- fine-tuning -----------------------------------------------------------------------------

def test_fine_tune_reports_validation_probabilities_each_epoch(tuned: dict) -> None:
    epochs = [epoch for epoch, _ in tuned["calls"]]
    assert epochs == [1, 2]
    for _, probs in tuned["calls"]:
        assert probs.shape == (len(tuned["val_texts"]),)
        assert np.all(np.isfinite(probs)) and np.all((probs >= 0) & (probs <= 1))


def test_fine_tune_last_epoch_probabilities_match_the_returned_model(tuned: dict) -> None:
    again = transformer.predict_proba(tuned["clf"], tuned["val_texts"], max_length=32)
    assert_reported_by_the_returned_model(tuned["calls"], again)


def assert_reported_by_the_returned_model(calls: list, again: np.ndarray) -> None:
    """The last epoch's reported probabilities are the returned model's: equal within the
    arithmetic's noise (bf16 autocast where the CPU has it, kernels picked by padding width:
    2.2e-5 on an AVX-512 EPYC), and far closer than the first epoch's (2.8e-4 there)."""
    last = np.abs(calls[-1][1] - again).max()
    first = np.abs(calls[0][1] - again).max()
    assert last < 1e-4 and 5 * last < first, (last, first)


def test_fine_tune_returns_trained_classifier_in_eval_mode(tuned: dict) -> None:
    trained = tuned["clf"]
    assert trained.new_head is False and not trained.model.training
    assert not list(tuned["work"].glob("checkpoint-*"))


def test_fine_tune_updates_the_weights(tuned: dict, clf: transformer.Classifier) -> None:
    before = dict(clf.model.named_parameters())
    changed = [name for name, value in tuned["clf"].model.named_parameters()
               if not torch.equal(value.detach().cpu(), before[name].detach())]
    assert "classifier.weight" in changed and any(n.startswith("bert.encoder") for n in changed)


def test_fine_tune_with_the_same_seed_gives_the_same_model(
    tuned: dict, tiny_model_dir: str, tmp_path: Path
) -> None:
    train_texts, train_labels = synthetic_reviews(32)
    calls: list[np.ndarray] = []
    finetune.fine_tune(
        tiny_model_dir, train_texts, train_labels, tuned["val_texts"], [0] * 10, PARAMS,
        max_length=32, output_dir=tmp_path, seed=0, device="cpu",
        on_epoch=lambda epoch, probs: calls.append(probs))
    np.testing.assert_allclose(calls[-1], tuned["calls"][-1][1], atol=1e-6)


def test_fine_tune_propagates_what_on_epoch_raises(tiny_model_dir: str, tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    stop = Stop()

    def on_epoch(epoch: int, probs: np.ndarray) -> None:
        raise stop

    texts, labels = synthetic_reviews(8)
    with pytest.raises(Stop) as info:
        finetune.fine_tune(tiny_model_dir, texts, labels, texts[:4], labels[:4], PARAMS,
                           max_length=16, output_dir=tmp_path, seed=0, device="cpu",
                           on_epoch=on_epoch)
    assert info.value is stop


def test_fine_tune_stops_when_the_loss_becomes_nan(
    tiny_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy",
                        lambda *a, **k: real(*a, **k) * float("nan"))
    calls = []
    texts, labels = synthetic_reviews(8)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        finetune.fine_tune(tiny_model_dir, texts, labels, texts[:4], labels[:4], PARAMS,
                           max_length=16, output_dir=tmp_path, seed=0, device="cpu",
                           on_epoch=lambda *args: calls.append(args))
    assert calls == []  # stopped in the first epoch, before any evaluation


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_both_training_engines_keep_the_fine_tune_contract(
    engine: str, tiny_model_dir: str, tmp_path: Path
) -> None:
    texts, labels = synthetic_reviews(16)
    calls: list[tuple[int, np.ndarray]] = []
    trained = finetune.fine_tune(
        tiny_model_dir, texts, labels, texts[:6], labels[:6], PARAMS, max_length=16,
        output_dir=tmp_path, seed=0, device="cpu", engine=engine,
        on_epoch=lambda epoch, probs: calls.append((epoch, probs)))
    assert [epoch for epoch, _ in calls] == list(range(1, PARAMS["num_train_epochs"] + 1))
    assert not trained.model.training and trained.new_head is False
    again = transformer.predict_proba(trained, texts[:6], max_length=16)
    assert_reported_by_the_returned_model(calls, again)


def test_an_unknown_training_engine_is_refused(tiny_model_dir: str, tmp_path: Path) -> None:
    texts, labels = synthetic_reviews(4)
    with pytest.raises(ConfigError, match="unknown training engine 'turbo'"):
        finetune.fine_tune(tiny_model_dir, texts, labels, texts, labels, PARAMS,
                           max_length=16, output_dir=tmp_path, seed=0, engine="turbo")


def test_fine_tune_rejects_unknown_parameters(tiny_model_dir: str, tmp_path: Path) -> None:
    texts, labels = synthetic_reviews(4)
    with pytest.raises(ConfigError, match="learning_rat"):
        finetune.fine_tune(tiny_model_dir, texts, labels, texts, labels,
                           {"learning_rat": 1e-3}, max_length=16, output_dir=tmp_path, seed=0)


@pytest.mark.parametrize(("ratio", "steps"), [(0.0, 0), (0.1, 10), (0.25, 25), (0.999, 100)])
def test_warmup_ratio_is_a_share_of_the_total_steps(tmp_path: Path, ratio: float,
                                                    steps: int) -> None:
    hp = resolve_params({"warmup_ratio": ratio})
    args = finetune._training_args(hp, tmp_path, seed=0, cuda=False, progress=False)
    assert args.get_warmup_steps(100) == steps


@pytest.mark.parametrize("params", [{"warmup_ratio": 1.0}, {"learning_rate": 0.0},
                                    {"num_train_epochs": 0}, {"weight_decay": -1.0}])
def test_out_of_range_parameters_are_refused_before_loading(params: dict, tmp_path: Path) -> None:
    texts, labels = synthetic_reviews(4)
    with pytest.raises(ConfigError, match=f"fine-tuning parameter {next(iter(params))} must"):
        finetune.fine_tune("no-such-model", texts, labels, texts, labels, params,
                           max_length=16, output_dir=tmp_path, seed=0)


def test_saved_classifier_loads_back_with_the_same_predictions(tuned: dict,
                                                               tmp_path: Path) -> None:
    directory = transformer.save_classifier(tuned["clf"], tmp_path / "model")
    assert (directory / "model.safetensors").is_file()
    assert not list(directory.glob("*.bin"))
    loaded = transformer.load_classifier(str(directory), device="cpu")
    assert loaded.new_head is False
    np.testing.assert_allclose(
        transformer.predict_proba(loaded, REVIEWS, max_length=32),
        transformer.predict_proba(tuned["clf"], REVIEWS, max_length=32), atol=1e-6)


# --- explanations ----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [REVIEWS[4], REVIEWS[8], "  Unbelievably   dull...  but OK "])
def test_explain_spans_slice_the_original_text(clf: transformer.Classifier, text: str) -> None:
    contributions = explain(clf, text, max_length=64, top_k=5)
    assert 0 < len(contributions) <= 5
    for c in contributions:
        assert isinstance(c, Contribution)
        assert text[c.start:c.end] == c.token and c.token.strip() == c.token
    weights = [abs(c.weight) for c in contributions]
    assert weights == sorted(weights, reverse=True)


def test_explain_joins_word_pieces_into_whole_words(clf: transformer.Classifier) -> None:
    text = "Unbelievably cinématographique"
    assert len(clf.tokenizer.tokenize(text)) > 2  # the words really are split into pieces
    tokens = {c.token for c in explain(clf, text, max_length=32, top_k=10)}
    assert tokens == {"Unbelievably", "cinématographique"}


def test_explain_weights_add_up_to_the_log_odds_change(clf: transformer.Classifier) -> None:
    text = REVIEWS[8]
    contributions = explain(clf, text, max_length=64, top_k=100, n_steps=64)
    ids = clf.tokenizer(text, return_tensors="pt")["input_ids"]
    baseline = ids.clone()
    baseline[0, 1:-1] = clf.tokenizer.pad_token_id
    with torch.no_grad():
        logits = [clf.model(input_ids=x).logits[0] for x in (ids, baseline)]
    change = float((logits[0][1] - logits[0][0]) - (logits[1][1] - logits[1][0]))
    total = sum(c.weight for c in contributions)
    assert total == pytest.approx(change, rel=0.05, abs=1e-3)


# --- the real encoder ------------------------------------------------------------------------

@pytest.mark.slow
def test_fine_tune_real_minilm_on_real_reviews(imdb_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.read_parquet(imdb_dir / "train.parquet", columns=["text", "label"])
    sample = frame.groupby("label").sample(40, random_state=0).sample(frac=1, random_state=0)
    texts, labels = sample["text"].tolist(), sample["label"].astype(int).tolist()
    calls = []
    trained = finetune.fine_tune(
        "minilm-offline", texts[:64], labels[:64], texts[64:], labels[64:],
        {"num_train_epochs": 1, "per_device_train_batch_size": 16, "learning_rate": 5e-5},
        max_length=64, output_dir=tmp_path, seed=0, device="cpu",
        on_epoch=lambda epoch, probs: calls.append((epoch, probs)),
    )
    assert [epoch for epoch, _ in calls] == [1]
    assert calls[0][1].shape == (16,) and np.all(np.isfinite(calls[0][1]))
    assert trained.new_head is False
