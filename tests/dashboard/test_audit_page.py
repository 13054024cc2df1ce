"""The "Data & models" page under AppTest: without data, without an audit, and with one."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage.store import open_store
from tests.dashboard import builders
from tests.dashboard.audit_builders import HOSTILE, sample_audit
from tests.dashboard.test_pages import charts, no_exception, table_with, texts

Open = Callable[[str, str], AppTest]


def plain(markdown: str) -> str:
    """Markdown as read: without the backslashes that escape user text."""
    return markdown.replace("\\", "")


def stages_db(folder: Path, *, audited: bool) -> tuple[str, dict[str, int]]:
    """Three stages on 300 synthetic test reviews, two trials on 80 validation ones, and
    (when audited) a hand-built audit naming the baseline and the fine-tuned run."""
    url = f"sqlite:///{folder / 'data.db'}"
    with open_store(url) as store:
        builders.fill_stages(store, builders.synthetic_reviews(300), folder / "artifacts")
        validation = builders.synthetic_reviews(80, seed=5, prefix="train")
        for trial in (0, 1):
            builders.save_stage(store, "trial", validation, 1.0, seed=10 + trial,
                                model="tiny-bert", study=builders.STUDY, trial=trial,
                                split="validation", n_bootstrap=0)
        ids = {r.spec.stage + (str(r.spec.trial) if r.spec.trial is not None else ""): r.id
               for r in store.list_runs()}
        if audited:
            runs = {r.id: r.label for r in store.list_runs()}
            pair = (ids["baseline"], ids["finetuned"])
            store.save_audit(sample_audit(pair, (runs[pair[0]], runs[pair[1]]),
                                          data_source=f"{HOSTILE} source"))
    return url, ids


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, int]]:
    return stages_db(tmp_path_factory.mktemp("audited"), audited=True)


def test_data_page_on_a_missing_database_says_how_to_make_one(open_page: Open,
                                                               missing_db: str) -> None:
    at = open_page(missing_db, "data")
    no_exception(at)
    assert "python -m trainer" in texts(at.info) + texts(at.error)
    assert not Path(missing_db.removeprefix("sqlite:///")).exists()


def test_data_page_on_an_empty_database_says_how_to_fill_it(open_page: Open,
                                                             empty_db: str) -> None:
    at = open_page(empty_db, "data")
    no_exception(at)
    assert "holds no evaluated model yet" in texts(at.info)


def test_without_an_audit_the_page_names_the_command_and_still_diffs_runs(
        open_page: Open, tmp_path: Path) -> None:
    url, ids = stages_db(tmp_path, audited=False)
    at = open_page(url, "data")
    no_exception(at)
    assert "python -m trainer audit" in texts(at.info)
    assert at.selectbox(key="data_diff_a").value == ids["baseline"]
    assert at.selectbox(key="data_diff_b").value == ids["pretrained"]
    sentence = plain(texts(at.markdown))
    assert "McNemar's exact test" in sentence and "(n = 300)" in sentence


def test_the_audit_page_shows_every_part_with_its_n(open_page: Open,
                                                    audited: tuple[str, dict[str, int]]) -> None:
    url, ids = audited
    at = open_page(url, "data")
    no_exception(at)
    counts = table_with(at, "conflicting")
    assert counts["groups"].sum() == 4 and counts["conflicting"].sum() == 2
    assert "2 duplicate groups carry conflicting labels" in texts(at.warning)
    dedup = table_with(at, "n_dedup")
    assert dedup["n_full"].tolist() == [300, 300, 300]
    assert dedup["n_dedup"].tolist() == [298, 298, 298]  # test/pos/1 and test/neg/2 leaked
    issues = table_with(at, "prob_given")
    assert issues["review_id"].tolist() == ["test/pos/1", "train/neg/10", "train/pos/9"]
    assert issues["text"].iloc[0] == builders.synthetic_reviews(300).texts[1]
    assert at.get("download_button")[0].proto.label.startswith("Download the candidates")
    assert table_with(at, "max_length")["truncated"].tolist() == [40]
    behaviour = table_with(at, "failure_rate")
    assert behaviour["n"].tolist() == [100, 80, 100, 80]
    titles = [str(c.get("title")) for c in charts(at)]
    assert "behavioural tests: failure rate per model" in titles
    assert {"accuracy by length", "accuracy by rating"} <= set(titles)
    assert len(at.get("expander")) == 1


def test_hostile_text_in_the_audit_is_shown_as_text(open_page: Open,
                                                    audited: tuple[str, dict[str, int]]) -> None:
    at = open_page(audited[0], "data")
    no_exception(at)
    assert HOSTILE not in texts(at.caption) + texts(at.markdown)
    assert "\\<script\\>" in texts(at.caption)
    examples = table_with(at, "prob_original")
    assert examples["text"].iloc[0] == f"{HOSTILE} case 0"  # a table cell: plain text


def test_review_diff_of_two_trials_and_refusal_of_a_stage_against_a_trial(
        open_page: Open, audited: tuple[str, dict[str, int]]) -> None:
    url, ids = audited
    at = open_page(url, "data")
    at.selectbox(key="data_diff_a").set_value(ids["trial0"])
    at.selectbox(key="data_diff_b").set_value(ids["trial1"]).run()
    no_exception(at)
    assert "(n = 80)" in plain(texts(at.markdown))
    diff = table_with(at, "prob_b")
    assert set(diff["right"]) <= {"A", "B"} and len(diff) > 0
    assert diff["review_id"].str.startswith("train/").all()
    at.selectbox(key="data_diff_a").set_value(ids["baseline"]).run()
    no_exception(at)
    assert "share no scored review" in texts(at.warning)


def test_hostile_names_and_reviews_never_become_markup(open_page: Open, tmp_path: Path) -> None:
    from tests.dashboard.test_xss import all_text, assert_rendered_as_text

    url = builders.populated(f"sqlite:///{tmp_path / 'xss.db'}", tmp_path / "artifacts",
                             xss=True)
    with open_store(url) as store:
        runs = {r.spec.stage: r for r in store.list_runs()}
        pair = (runs["baseline"].id, runs["finetuned"].id)
        store.save_audit(sample_audit(pair, (runs["baseline"].label, runs["finetuned"].label)))
    at = open_page(url, "data")
    assert_rendered_as_text(at)
    assert f"{builders.XSS[0]} great film" in all_text(at)  # a label-issue candidate's text
    at.selectbox(key="data_diff_b").set_value(pair[1]).run()
    assert_rendered_as_text(at)
    diff = table_with(at, "prob_b")
    hostile = diff[diff["text"].str.contains("<", regex=False, na=False)]
    assert not hostile.empty
    at.selectbox(key="data_diff_read").set_value(hostile["review_id"].iloc[0]).run()
    assert_rendered_as_text(at)
    assert at.text[0].value in (f"{builders.XSS[0]} great film",
                                f"{builders.XSS[1]} awful film")  # st.text: never parsed
