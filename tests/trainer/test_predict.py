"""Review input (the one CSV reader), model references by stage, and the one run label."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.records import COMPARED_STAGES, STAGES, Evaluation, RunSpec, Stage, run_label
from storage.store import Store, open_store
from trainer import predict
from trainer.cli import build_parser
from trainer.errors import DataError, TrainerError
from trainer.predict import read_reviews_csv

# ---------------------------------------------------------------- the CSV reader


@pytest.mark.parametrize(("data", "column", "reviews"), [
    (b"text,stars\nGreat film,5\nAwful,1\n", "text", ["Great film", "Awful"]),
    (b"\xef\xbb\xbftext,stars\r\nGreat film,5\r\nAwful,1\r\n", "text", ["Great film", "Awful"]),
    (b"Review\n\"Great, truly\nfilm\"\nAwful\n", "Review", ["Great, truly\nfilm", "Awful"]),
    (b" TEXT ,review\r\na,b\r\n", " TEXT ", ["a"]),  # 'text' wins over 'review'
    (b"Text\nGreat film\n", "Text", ["Great film"]),  # one column named text: a header
    (b"\xef\xbb\xbf REVIEW \r\n\r\nDull\r\n", " REVIEW ", ["Dull"]),  # blank lines skipped
    (b'""\nGreat film\n', "", ["Great film"]),  # a blank first cell: a header, not a review
])
def test_reader_finds_the_review_column_with_bom_crlf_and_quoted_newlines(
    data: bytes, column: str, reviews: list[str]
) -> None:
    table = read_reviews_csv(data, "r.csv")
    assert table.column == column and table.reviews == reviews and len(table) == len(reviews)
    assert not table.headerless and table.notice is None


@pytest.mark.parametrize(("data", "reviews"), [
    (b"Great film\nAwful\n", ["Great film", "Awful"]),
    (b"\xef\xbb\xbf\"A superb, moving film\"\r\n\r\nDull\r\n", ["A superb, moving film", "Dull"]),
    (b"comments\nDull\n", ["comments", "Dull"]),  # only text and review name the column
    (b"The only review\n", ["The only review"]),
])
def test_reader_keeps_the_first_review_of_a_headerless_single_column(
    data: bytes, reviews: list[str]
) -> None:
    table = read_reviews_csv(data, "r.csv")
    assert table.reviews == reviews and len(table) == len(reviews)
    assert table.headerless and list(table.frame.columns) == [table.column] == ["text"]
    assert table.notice is not None and table.notice.startswith("r.csv has one column and no "
                                                                "header row")
    assert "first row was read as a review" in table.notice and "; " in table.notice


def test_reader_says_a_headerless_files_extra_field_breaks_the_first_rows_width() -> None:
    with pytest.raises(DataError, match=r"line 2 has 2 fields, the first row 1\); quote"):
        read_reviews_csv(b"Great film\nAwful, really\n", "r.csv")


def test_reader_keeps_every_column_as_text_in_file_order() -> None:
    table = read_reviews_csv(b"id,text,stars\n007,Great,5\n8,Awful\n", "r.csv")
    assert list(table.frame.columns) == ["id", "text", "stars"]
    assert table.frame.to_dict("list") == {"id": ["007", "8"], "text": ["Great", "Awful"],
                                           "stars": ["5", ""]}  # a short row reads ""


def test_reader_makes_repeated_header_names_unique() -> None:
    table = read_reviews_csv(b"text,text,\na,b,c\n", "r.csv")
    assert list(table.frame.columns) == ["text", "text.1", ""]
    assert table.reviews == ["a"]


def test_reader_keeps_whitespace_reviews_for_validation_to_refuse() -> None:
    table = read_reviews_csv(b"text\r\ngood\r\n   \r\n", "r.csv")
    assert table.reviews == ["good", "   "]
    with pytest.raises(TrainerError, match="the review is empty"):
        predict.validate_review(table.reviews[1])


@pytest.mark.parametrize(("data", "message"), [
    (b"text\ngood\n\xff\xfe bad bytes\n", "r.csv is not valid UTF-8 (line 3)"),
    (b"", "r.csv is empty"),
    (b"\xef\xbb\xbf  \r\n", "r.csv is empty"),
    (b"title,stars\nx,1\n",
     "expected a column named 'text' or 'review' (or a single column) in r.csv, "
     "found ['title', 'stars']"),
    (b"\xef\xbb\xbftext\r\n", "r.csv has a header but no reviews"),
    (b'text,b\nok,1\n"unterminated,1\nmore\n',
     "r.csv is not a readable CSV (the row from line 3: unexpected end of data)"),
    (b"a,b\n\"x\ny\",2\n1,2,3\n",
     "r.csv is not a readable CSV (the row from line 4 has 3 fields, the header 2)"),
    pytest.param(b'text\r\n"x' + b"\na" * 70_000 + b"\r\n", "r.csv is not a readable CSV (the "
                 "row from line 2: a quoted field still open on line 65538, over 131,072 "
                 "characters long", id="open-quote-past-field-limit"),  # 1 + 2 * 65,536 > 2**17
])
def test_reader_refuses_bad_files_saying_what_to_do(data: bytes, message: str) -> None:
    with pytest.raises(DataError) as caught:
        read_reviews_csv(data, "r.csv")
    assert message in str(caught.value)
    assert "; " in str(caught.value)  # then what to do


@pytest.mark.parametrize(("data", "line"), [
    (b'text\r\n"' + b"a" * 150_000 + b'"\r\n', 2),  # quoted
    (b"text,id\ngood,1\n" + b"a" * 150_000 + b",3\n", 3),  # unquoted: no quote is wrong
    (b"good\n\n" + b"a" * 131_073 + b"\n", 3),  # headerless
])
def test_reader_names_a_field_too_long_for_csv_as_a_too_long_review(data: bytes,
                                                                     line: int) -> None:
    with pytest.raises(DataError) as caught:
        read_reviews_csv(data, "r.csv")
    assert str(caught.value) == (
        f"r.csv has a field longer than 131,072 characters on line {line}; reviews are limited "
        f"to {predict.MAX_REVIEW_CHARS:,} characters, so shorten that review or leave it out, "
        "then try again")


def test_reader_caps_rows_only_when_asked() -> None:
    data = b"text\n" + b"a\n" * 4
    with pytest.raises(DataError, match="r.csv has 4 reviews; give at most 3"):
        read_reviews_csv(data, "r.csv", max_rows=3)
    assert len(read_reviews_csv(data, "r.csv", max_rows=4)) == 4
    assert len(read_reviews_csv(data, "r.csv")) == 4


# ---------------------------------------------------------------- stages and model references


@pytest.fixture
def store() -> Iterator[Store]:
    with open_store("sqlite://") as opened:
        yield opened


def evaluation() -> Evaluation:
    return Evaluation(n=1, scalars={"accuracy": 1.0}, per_class={}, confusion=((1, 0), (0, 0)))


def save(store: Store, stage: str, **spec: object) -> int:
    values = {"model": "m", "split": "test", "data_source": "d", "artifact": "hub/model", **spec}
    return store.save_run(RunSpec(stage=stage, **values), evaluation())


def test_stages_are_the_strings_the_database_holds() -> None:
    assert STAGES == ("baseline", "pretrained", "finetuned", "trial")
    assert [s.display for s in Stage] == ["TF-IDF baseline", "pretrained model",
                                          "fine-tuned model", "trial"]
    assert COMPARED_STAGES == (Stage.BASELINE, Stage.PRETRAINED, Stage.FINETUNED)
    assert [s.order for s in Stage] == [0, 1, 2, 3]
    assert Stage("finetuned") is Stage.FINETUNED and f"{Stage.FINETUNED}" == "finetuned"


@pytest.mark.parametrize("stage", list(Stage))
def test_each_stage_names_a_real_command_and_a_model_reference(stage: Stage) -> None:
    build_parser().parse_args([stage.command])  # exits if the CLI has no such command
    assert Stage.of_ref(stage.ref) is stage
    assert stage.ref in predict.REF_HELP


@pytest.mark.parametrize("stage", list(Stage))
def test_resolve_ref_finds_the_newest_model_of_the_stage_its_word_names(
    store: Store, stage: Stage
) -> None:
    ref = f"{stage.ref}:4" if stage is Stage.TRIAL else stage.ref
    with pytest.raises(TrainerError, match=f"run `python -m trainer {stage.command}` first"):
        predict.resolve_ref(store, ref)
    numbered = {"trial": 4} if stage is Stage.TRIAL else {}
    save(store, stage, study="s1", **numbered)
    newest = save(store, stage, study="s2", **numbered)
    save(store, Stage.BASELINE if stage is not Stage.BASELINE else Stage.PRETRAINED)
    run = predict.resolve_ref(store, ref)
    assert run.id == newest and run.spec.stage == stage


def test_model_choices_list_stages_in_order_newest_first(store: Store) -> None:
    ids = {"trial": save(store, "trial", study="s", trial=0),
           "finetuned": save(store, "finetuned", study="s"),
           "old baseline": save(store, "baseline"),
           "pretrained": save(store, "pretrained"),
           "baseline": save(store, "baseline")}
    choices = predict.model_choices(store)
    assert [c.run_id for c in choices] == [ids[k] for k in ("baseline", "old baseline",
                                                            "pretrained", "finetuned", "trial")]
    assert choices[-1].ref == "trial:0" and choices[0].ref == f"run:{ids['baseline']}"


# ---------------------------------------------------------------- the run label


@pytest.mark.parametrize(("spec", "label"), [
    (RunSpec("baseline", "tfidf-logreg", "test", "d"), "TF-IDF baseline: tfidf-logreg (run 1)"),
    (RunSpec("pretrained", "/models/all-MiniLM-L6-v2/", "test", "d"),
     "pretrained model: all-MiniLM-L6-v2 (run 1)"),
    (RunSpec("finetuned", "org/deberta", "test", "d", study="imdb"),
     "fine-tuned model: deberta, study imdb (run 1)"),
    (RunSpec("trial", "org/deberta", "validation", "d", study="imdb", trial=3),
     "trial 3 of imdb (run 1)"),
    (RunSpec("other", "m", "test", "d"), "other: m (run 1)"),
])
def test_run_label_names_stage_model_and_study(spec: RunSpec, label: str) -> None:
    assert run_label(1, spec) == label


def test_model_choice_and_stored_run_carry_the_same_label(store: Store) -> None:
    run_id = save(store, "finetuned", study="imdb", model="/x/minilm")
    (choice,) = predict.model_choices(store)
    assert choice.label == store.get_run(run_id).label == "fine-tuned model: minilm, study imdb " \
        f"(run {run_id})"


# ---------------------------------------------------------------- transformer predictors


def test_a_headless_pretrained_model_scores_alike_on_every_load_and_says_it_is_untrained(
        store: Store, headless_dir: str) -> None:
    save(store, "pretrained", artifact=headless_dir, config={"seed": 3})
    loads = [predict.load_predictor(store, "pretrained", max_length=32) for _ in range(2)]
    scores = [p.predict_proba(["A wonderful film.", "Dull."]) for p in loads]
    assert scores[0].tolist() == scores[1].tolist()
    assert loads[0].untrained_head
    (note,) = loads[0].notes
    assert "untrained classification head" in note and "seed 3" in note
    record = predict.prediction_record(float(scores[0][0]), loads[0])
    assert record["head"] == predict.UNTRAINED_HEAD == "untrained (chance-level)"


def test_the_stored_runs_seed_draws_the_head_unless_one_is_given(store: Store,
                                                                 headless_dir: str) -> None:
    save(store, "pretrained", artifact=headless_dir, config={"seed": 3})
    review = ["A wonderful film."]
    stored = predict.load_predictor(store, "pretrained", max_length=32).predict_proba(review)
    same = predict.load_predictor(store, "pretrained", max_length=32, seed=3)
    other = predict.load_predictor(store, "pretrained", max_length=32, seed=4)
    assert same.predict_proba(review)[0] == stored[0] != other.predict_proba(review)[0]


def test_a_trained_model_has_no_head_field_and_no_notes(store: Store, tiny_model_dir: str) -> None:
    save(store, "finetuned", artifact=tiny_model_dir, study="s")
    predictor = predict.load_predictor(store, "final", max_length=32)
    assert not predictor.untrained_head and predictor.notes == ()
    assert "head" not in predict.prediction_record(0.25, predictor)


class _Named:
    name = "m (run 1)"
    untrained_head = False
    notes: tuple[str, ...] = ()


@pytest.mark.parametrize(("prob", "label", "score"), [(0.8, "positive", 0.8),
                                                      (0.25, "negative", 0.75),
                                                      (0.5, "positive", 0.5)])
def test_a_prediction_gives_the_positive_probability_beside_its_labels(
        prob: float, label: str, score: float) -> None:
    record = predict.prediction_record(prob, _Named())
    assert record == {"label": label, "score": score, "prob_positive": prob,
                      "model": "m (run 1)"}


def test_predict_prints_prob_positive_and_notes_an_untrained_head_once(
        tmp_path, headless_dir: str, capsys: pytest.CaptureFixture) -> None:
    import json

    from trainer.cli import main

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with open_store(url) as opened:
        save(opened, "pretrained", artifact=headless_dir, config={"seed": 3})
    assert main(["predict", "Great.", "Awful.", "--model-ref", "pretrained", "--db", url,
                 "--max-length", "32"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2 and err.count("untrained classification head") == 1
    for line in lines:
        assert line["head"] == "untrained (chance-level)"
        positive = line["score"] if line["label"] == "positive" else 1 - line["score"]
        assert line["prob_positive"] == pytest.approx(positive, abs=2e-6)


def test_predict_gives_a_headless_model_the_scores_its_pretrained_run_stored(
        tmp_path, headless_dir: str, small_imdb, capsys: pytest.CaptureFixture) -> None:
    import json

    from trainer.cli import main

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["--quiet", "pretrained", "--data", str(small_imdb), "--model", headless_dir,
                 "--db", db, "--test-size", "6", "--max-length", "32", "--seed", "5"]) == 0
    with open_store(db) as opened:
        (run,) = opened.list_runs()
        stored = opened.predictions(run.id).head(2)
    assert "chance-level" in run.spec.warnings[0]
    capsys.readouterr()
    assert main(["predict", *stored["text"], "--model-ref", "pretrained", "--db", db,
                 "--max-length", "32"]) == 0
    scores = [json.loads(line)["prob_positive"] for line in capsys.readouterr().out.splitlines()]
    assert scores == pytest.approx(stored["prob"].tolist(), abs=1e-6)
