"""Tests for the TF-IDF + logistic regression baseline (trainer.baseline, .baseline_io)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from trainer.baseline import io as baseline_io
from trainer.baseline import selection
from trainer.baseline.cleaning import clean
from trainer.baseline.io import load_baseline, save_baseline
from trainer.baseline.model import BaselineModel, train_baseline
from trainer.errors import DataError, ModelError

POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "moving"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "clumsy"]
FILLER = ["the", "movie", "film", "plot", "actor", "was", "and", "it", "this", "scene", "story",
          "director", "music", "really", "quite", "cast", "ending", "we", "saw", "didn't"]
TRICKY = ["İstanbul café — AWFUL<br />film… Truly GREAT!", "", "!!!", "a b c", "Ünïcödé ΣΑΣ",
          "don't<BR>stop<br/>now, it's great", "x" * 3 + " 42 __init__ e-mail",
          "broken \udcff bytes \udcff", "\tgreat\x0bfilm\x0c\r\nnot  bad ",
          "good\x1cfilm\x00bad\x7f"]


def _review(rng: random.Random, label: int) -> str:
    """A noisy synthetic review: filler, 2-3 words of its class, one of the other, markup."""
    own, other = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
    words = rng.choices(FILLER, k=rng.randint(8, 16)) + rng.choices(own, k=rng.randint(2, 3))
    words += rng.choices(other, k=1) + ["not bad" if label else "not good"]
    rng.shuffle(words)
    words = [w.upper() if rng.random() < 0.1 else w for w in words]
    return " ".join(w + rng.choice(["", "", ",", "!", "<br />", "."]) for w in words)


def _corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """n reviews, alternating classes; one in eight carries the other class's label (noise)."""
    rng = random.Random(seed)
    labels = np.array([i % 2 for i in range(n)])
    texts = [_review(rng, int(label)) for label in labels]
    return texts, np.where(np.arange(n) // 2 % 8 == 3, 1 - labels, labels)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], np.ndarray]:
    return _corpus(400, seed=1)


@pytest.fixture(scope="module")
def model(corpus: tuple[list[str], np.ndarray]) -> BaselineModel:
    texts, labels = corpus
    return train_baseline(texts, labels, seed=0)


def _sklearn_vectorizer(params: dict, texts: list[str]) -> TfidfVectorizer:
    return TfidfVectorizer(preprocessor=clean, token_pattern=params["token_pattern"],
                           ngram_range=tuple(params["ngram_range"]), min_df=params["min_df"],
                           sublinear_tf=params["sublinear_tf"]).fit(texts)


def _assert_matches_sklearn(model: BaselineModel, fit_texts: list[str], texts: list[str]) -> None:
    vectorizer = _sklearn_vectorizer(model.params, fit_texts)
    vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    assert model.vocabulary == tuple(vocabulary)
    np.testing.assert_allclose(model.idf, vectorizer.idf_, rtol=0, atol=1e-12)
    ours, theirs = model.transform(texts), vectorizer.transform(texts)
    assert abs(ours - theirs).max() < 1e-6
    expected = 1 / (1 + np.exp(-(theirs @ model.coef + model.intercept)))
    np.testing.assert_allclose(model.predict_proba(texts), expected, rtol=0, atol=1e-9)


def test_baseline_learns_synthetic_sentiment(model: BaselineModel) -> None:
    texts, labels = _corpus(200, seed=2)
    accuracy = np.mean((model.predict_proba(texts) >= 0.5) == labels)
    assert accuracy >= 0.8
    assert model.params["ngram_range"] in ([1, 1], [1, 2])
    assert model.params["C"] in selection.C_GRID
    assert len(model.params["selection"]) == len(selection.FAMILIES) * len(selection.C_GRID)
    assert model.coef.shape == model.idf.shape == (len(model.vocabulary),)


def test_predict_proba_of_no_texts_is_empty(model: BaselineModel) -> None:
    assert model.predict_proba([]).shape == (0,)


def test_training_text_is_cleaned(model: BaselineModel) -> None:
    assert all(term == term.lower() for term in model.vocabulary)
    assert "br" not in model.vocabulary
    assert "didn" in model.vocabulary  # the apostrophe survives cleaning, the token pattern splits
    messy, plain = model.predict_proba(["GREAT<br />Movie!!, boring.", "great movie boring"])
    assert messy == pytest.approx(plain, abs=1e-12)


@pytest.mark.parametrize("family", [((1, 1), True, 2), ((1, 2), True, 2), ((1, 2), False, 3)])
def test_transform_matches_fitted_sklearn_vectorizer(
    corpus: tuple[list[str], np.ndarray], family: tuple
) -> None:
    texts, labels = corpus
    model = train_baseline(texts, labels, families=(family,))
    assert model.params["ngram_range"] == list(family[0])
    others, _ = _corpus(300, seed=3)
    _assert_matches_sklearn(model, texts, others + TRICKY)


def test_selection_equals_sklearn_pipeline_fitted_on_the_carve_only(
    corpus: tuple[list[str], np.ndarray], model: BaselineModel
) -> None:
    texts, labels = corpus
    fit_rows, val_rows = selection.carve_validation(labels, seed=0)
    fit_texts = [texts[i] for i in fit_rows]
    val_texts = [texts[i] for i in val_rows]
    for row in model.params["selection"]:
        vectorizer = _sklearn_vectorizer({**model.params, **row}, fit_texts)
        classifier = LogisticRegression(C=row["C"], solver="liblinear", dual=True,
                                        tol=selection.TOLERANCE, random_state=0, max_iter=1000)
        classifier.fit(vectorizer.transform(fit_texts), labels[fit_rows])
        predicted = classifier.predict(vectorizer.transform(val_texts))
        assert row["accuracy"] == pytest.approx(np.mean(predicted == labels[val_rows]))


def test_validation_carve_is_stratified_disjoint_and_seeded() -> None:
    labels = np.array([0] * 60 + [1] * 40)
    fit_rows, val_rows = selection.carve_validation(labels, seed=0)
    assert not set(fit_rows) & set(val_rows)
    assert len(fit_rows) + len(val_rows) == 100
    assert labels[val_rows].sum() == 8 and len(val_rows) == 20
    np.testing.assert_array_equal(val_rows, selection.carve_validation(labels, seed=0)[1])
    assert not np.array_equal(val_rows, selection.carve_validation(labels, seed=1)[1])


def test_training_is_deterministic_for_a_seed(
    corpus: tuple[list[str], np.ndarray], model: BaselineModel
) -> None:
    texts, labels = corpus
    again = train_baseline(texts, labels, seed=0)
    assert again.vocabulary == model.vocabulary
    np.testing.assert_array_equal(again.coef, model.coef)
    assert again.params["selection"] == model.params["selection"]
    other = train_baseline(texts, labels, seed=5)
    assert other.params["selection"] != model.params["selection"]


def test_save_load_round_trip_gives_identical_probabilities(
    model: BaselineModel, tmp_path: Path
) -> None:
    loaded = load_baseline(save_baseline(model, tmp_path / "baseline"))
    texts, _ = _corpus(50, seed=4)
    np.testing.assert_array_equal(loaded.predict_proba(texts + TRICKY),
                                  model.predict_proba(texts + TRICKY))
    assert loaded.vocabulary == model.vocabulary
    assert loaded.params == model.params
    assert loaded.intercept == model.intercept


@pytest.fixture
def saved(model: BaselineModel, tmp_path: Path) -> Path:
    return save_baseline(model, tmp_path / "model")


def _assert_one_sentence_model_error(directory: Path, *fragments: str) -> None:
    with pytest.raises(ModelError) as caught:
        load_baseline(directory)
    message = str(caught.value)
    assert "\n" not in message and message.endswith(".")
    assert "save_baseline" in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("missing", [baseline_io.JSON_NAME, baseline_io.NPZ_NAME])
def test_load_rejects_a_missing_file(saved: Path, missing: str) -> None:
    (saved / missing).unlink()
    _assert_one_sentence_model_error(saved, missing, "no such file")


def test_load_rejects_a_missing_directory(tmp_path: Path) -> None:
    _assert_one_sentence_model_error(tmp_path / "nowhere", "no such file")


def test_load_rejects_a_corrupt_npz(saved: Path) -> None:
    (saved / baseline_io.NPZ_NAME).write_bytes(b"PK\x03\x04 not really a zip")
    _assert_one_sentence_model_error(saved, baseline_io.NPZ_NAME)


def test_load_rejects_a_truncated_npz(saved: Path) -> None:
    data = (saved / baseline_io.NPZ_NAME).read_bytes()
    (saved / baseline_io.NPZ_NAME).write_bytes(data[: len(data) // 2])
    _assert_one_sentence_model_error(saved, baseline_io.NPZ_NAME)


def test_load_never_unpickles_an_npz(saved: Path, model: BaselineModel) -> None:
    objects = np.array([object()] * len(model.vocabulary), dtype=object)
    np.savez(saved / baseline_io.NPZ_NAME, idf=objects, coef=model.coef)  # pickles `idf`
    _assert_one_sentence_model_error(saved, "allow_pickle=False")


def test_load_rejects_arrays_that_do_not_fit_the_vocabulary(saved: Path) -> None:
    np.savez(saved / baseline_io.NPZ_NAME, idf=np.ones(3), coef=np.ones(3))
    _assert_one_sentence_model_error(saved, "shape (3,)")


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "keras", "x": 1}),
                                     json.dumps([1, 2]),
                                     json.dumps({"format": baseline_io.FORMAT})])
def test_load_rejects_corrupt_or_foreign_json(saved: Path, content: str) -> None:
    (saved / baseline_io.JSON_NAME).write_text(content, encoding="utf-8")
    _assert_one_sentence_model_error(saved, baseline_io.JSON_NAME)


@pytest.fixture(scope="module")
def bigram_model(corpus: tuple[list[str], np.ndarray]) -> BaselineModel:
    return train_baseline(*corpus, families=(((1, 2), True, 2),))


@pytest.mark.parametrize("which", ["model", "bigram_model"])
@pytest.mark.parametrize("text", TRICKY + _corpus(10, seed=6)[0])
def test_contributions_sum_to_the_logit(
    request: pytest.FixtureRequest, which: str, text: str
) -> None:
    model = request.getfixturevalue(which)
    parts = model.contributions(text, top_k=None)
    expected = logit(model.predict_proba([text])[0])
    assert sum(p.weight for p in parts) + model.intercept == pytest.approx(expected, abs=1e-9)
    for part in parts:
        assert text[part.start:part.end] == part.token


def test_contributions_point_at_the_original_words(model: BaselineModel) -> None:
    text = "İstanbul café — AWFUL<br />film… Truly GREAT, not BAD!"
    parts = model.contributions(text, top_k=None)
    by_token = {p.token: p for p in parts}
    assert by_token["AWFUL"].weight < 0 < by_token["GREAT"].weight
    assert (by_token["AWFUL"].start, by_token["AWFUL"].end) == (16, 21)
    assert text.index("GREAT") == by_token["GREAT"].start
    assert {"film", "BAD"} <= set(by_token)


def test_contributions_split_repeats_and_bigrams_equally() -> None:
    model = BaselineModel(("good", "not", "not good"), np.ones(3), np.array([1.0, 0.0, -4.0]),
                          0.0, {"sublinear_tf": False})
    parts = model.contributions("Not GOOD, good!", top_k=None)
    norm = np.sqrt(1 + 2**2 + 1)  # tf: not 1, good 2, "not good" 1
    expected = {(0, 3): -2 / norm,  # half of "not good"
                (4, 8): 1 / norm - 2 / norm,  # half of "good" (twice) and half of "not good"
                (10, 14): 1 / norm}
    assert {(p.start, p.end): p.weight for p in parts} == pytest.approx(expected, abs=1e-12)
    assert [p.token for p in parts] == ["Not", "GOOD", "good"]


def test_contributions_are_the_top_k_by_absolute_weight(model: BaselineModel) -> None:
    text = _corpus(1, seed=7)[0][0]
    everything = model.contributions(text, top_k=None)
    top = model.contributions(text, top_k=3)
    magnitudes = [abs(p.weight) for p in everything]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert top == everything[:3]


def test_progress_names_the_stages(
    corpus: tuple[list[str], np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    model = train_baseline(*corpus, progress=True)
    shown = capsys.readouterr().err
    assert all(f"baseline: {name}" in shown for name in ("vectorise", "select", "refit"))
    assert list(model.params["seconds"]) == ["clean", "vectorise", "select", "refit"]


def test_training_rejects_texts_without_shared_words() -> None:
    with pytest.raises(DataError, match="at least 2 of the texts"):
        train_baseline([f"word{i}" for i in range(20)], [0, 1] * 10)


@pytest.mark.parametrize("labels", [[0, 1, 2] * 10, [1] * 30, [0, 1] * 14])
def test_training_rejects_bad_labels(labels: list[int]) -> None:
    with pytest.raises(DataError):
        train_baseline(["a good film"] * 30, labels)


def test_transform_matches_sklearn_on_real_reviews(imdb_dir: Path) -> None:
    train = pd.read_parquet(imdb_dir / "train.parquet").sample(2000, random_state=0)
    test = pd.read_parquet(imdb_dir / "test.parquet").sample(300, random_state=0)
    model = train_baseline(train.text.tolist(), train.label.to_numpy())
    _assert_matches_sklearn(model, train.text.tolist(), test.text.tolist())


@pytest.mark.slow
def test_baseline_on_the_whole_imdb_reaches_the_target_accuracy(imdb_dir: Path) -> None:
    train = pd.read_parquet(imdb_dir / "train.parquet")
    test = pd.read_parquet(imdb_dir / "test.parquet")
    model = train_baseline(train.text.tolist(), train.label.to_numpy(), seed=0)
    predicted = model.predict_proba(test.text.tolist()) >= 0.5
    assert len(train) == len(test) == 25_000
    assert np.mean(predicted == test.label.to_numpy()) >= 0.895
