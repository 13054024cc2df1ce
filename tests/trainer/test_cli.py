"""Command line end to end: user errors are one clear line with exit 1, stages resume, JSON out."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd
import pytest

from storage.store import open_store
from trainer.cli import ConsoleHandler, main


def _runs(db: str) -> list:
    with open_store(db) as store:
        return store.list_runs()


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one clear sentence, no traceback
    return err[0]


def _write(folder: Path, content: bytes) -> str:
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"{split}.csv").write_bytes(content)
    return str(folder)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no such directory"),
        (b"review,label\nfine,1\nbad,0\n", "expected the columns ['label', 'text']"),
        (b"text,label\nfine,5\nbad,0\n", "labels must be 0 (negative) or 1 (positive)"),
        (b"text,label\nfi\xffne,1\nbad,0\n", "not valid UTF-8"),
    ],
)
def test_bad_data_is_one_line_exit_1_and_leaves_the_store_unchanged(
    tmp_path: Path, small_imdb: Path, capsys: pytest.CaptureFixture[str], content, words
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    common = ["--db", db, "--artifacts", str(tmp_path / "art")]
    assert main(["--quiet", "baseline", "--data", str(small_imdb), *common]) == 0
    before = [r.id for r in _runs(db)]
    data = str(tmp_path / "nowhere/x") if content is None else _write(tmp_path / "bad", content)
    capsys.readouterr()
    assert main(["--quiet", "baseline", "--data", data, *common]) == 1
    assert words in _error_line(capsys)
    assert [r.id for r in _runs(db)] == before


def test_unknown_database_scheme_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", "foo://bar"]) == 1
    assert "sqlite:///" in _error_line(capsys)


def test_unreachable_default_model_names_the_offline_route(
    small_imdb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--quiet", "pretrained", "--data", str(small_imdb), "--test-size", "10",
                 "--db", f"sqlite:///{tmp_path / 's.db'}"])
    assert code == 1
    line = _error_line(capsys)
    assert "--model DIR" in line and "minilm-offline" in line


def test_acl_imdb_folder_gives_the_same_baseline_as_parquet(
    small_imdb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acl = tmp_path / "aclImdb"
    for split in ("train", "test"):
        frame = pd.read_parquet(small_imdb / f"{split}.parquet")
        for text, label, review_id in frame[["text", "label", "review_id"]].itertuples(
                index=False):
            _, polarity, number = review_id.split("/")
            path = acl / split / polarity / f"{number}_{7 if label else 2}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    accuracy = {}
    for name, data in (("parquet", small_imdb), ("acl", acl)):
        db = f"sqlite:///{tmp_path / name}.db"
        assert main(["--quiet", "baseline", "--data", str(data), "--db", db,
                     "--artifacts", str(tmp_path / name)]) == 0
        capsys.readouterr()
        assert main(["report", "--json", "--db", db]) == 0
        report = json.loads(capsys.readouterr().out)
        accuracy[name] = report["runs"][0]["metrics"]
    assert accuracy["parquet"] == accuracy["acl"]


@pytest.mark.slow
def test_run_is_resumable_and_reports_every_stage(
    small_imdb: Path, tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    args = ["--quiet", "run", "--data", str(small_imdb), "--model", tiny_model_dir, "--db", db,
            "--artifacts", str(tmp_path / "art"), "--trials", "2", "--train-size", "32",
            "--eval-size", "32", "--test-size", "40", "--max-length", "32"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "McNemar p vs fine-tuned" in first
    ids = [r.id for r in _runs(db)]
    assert main(args) == 0  # resumed: nothing is redone
    assert [r.id for r in _runs(db)] == ids
    capsys.readouterr()
    assert main(["report", "--json", "--db", db]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["stage"] for r in report["runs"]] == ["baseline", "pretrained", "finetuned"]
    assert report["runs"][1]["n"] == 40 and report["runs"][0]["n"] == 100
    (study,) = report["studies"]
    assert sum(study["trials"][k] for k in ("complete", "pruned", "failed")) == 2
    reviews = ["A superb, moving film.", "Dreadful. Boring. " * 20, "ok"]
    scores = {}
    for extra in ([], ["--fast"]):
        assert main(["predict", *reviews, "--model-ref", "final", "--db", db, *extra]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        scores[bool(extra)] = [x["prob_positive"] for x in lines]
    # Three short reviews are too little work to earn back preparing the fast path: --fast
    # scores them eagerly, exactly as without it (trainer.transformer.fast.worth_preparing).
    assert scores[True] == scores[False]


def test_predict_reads_arguments_and_csv_and_refuses_empty_reviews(
    small_imdb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 's.db'}"]
    assert main(["--quiet", "baseline", "--data", str(small_imdb), *db,
                 "--artifacts", str(tmp_path / "art")]) == 0
    csv = tmp_path / "reviews.csv"
    csv.write_bytes("\ufefftext\r\n\"A superb, moving film\"\r\nDreadful. Boring.\r\n".encode())
    capsys.readouterr()
    assert main(["predict", "Great acting", "--file", str(csv), *db]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    assert all(x["label"] in ("positive", "negative") and 0.5 <= x["score"] <= 1 for x in lines)
    assert main(["predict", "   ", *db]) == 1
    assert "empty" in _error_line(capsys)
    assert main(["predict", "fine", "--model-ref", "trial:x", *db]) == 1
    assert "unknown model reference" in _error_line(capsys)


def test_report_reads_a_read_only_folder_without_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.storage import read_only

    folder = tmp_path / "db"
    folder.mkdir()
    db = f"sqlite:///{folder / 'runs.db'}"
    read_only.written_database(db)
    with read_only.read_only_folder(folder):
        before = read_only.snapshot(folder)
        done = read_only.run_unprivileged(["-m", "trainer", "report", "--json", "--db", db])
        assert read_only.snapshot(folder) == before  # nothing created, migrated or switched
        # Root may write anywhere: reading a WAL file then makes SQLite's index beside it, but
        # the database itself is left as it was.
        assert main(["report", "--json", "--db", db]) == 0
        assert read_only.snapshot(folder)["runs.db"] == before["runs.db"]
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert json.loads(capsys.readouterr().out) == report
    assert [r["stage"] for r in report["runs"]] == ["baseline"]
    (study,) = report["studies"]
    assert study["name"] == read_only.STUDY and study["trials"]["complete"] == 2


def test_report_on_a_database_without_our_tables_is_empty_and_names_what_fills_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"")
    assert main(["report", "--json", "--db", f"sqlite:///{path}"]) == 0
    empty = json.loads(capsys.readouterr().out)
    assert empty["runs"] == [] and empty["studies"] == []
    assert main(["report", "--db", f"sqlite:///{path}"]) == 0
    out = capsys.readouterr().out
    assert "(none yet)" in out and "python -m trainer baseline" in out
    assert path.read_bytes() == b"" and [p.name for p in tmp_path.iterdir()] == ["notes.db"]


def test_report_with_a_select_only_postgresql_role(
    pg_schema_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.storage import read_only

    read_only.written_database(pg_schema_url)
    with read_only.select_only_role(pg_schema_url) as role_url:
        assert main(["report", "--json", "--db", role_url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in report["studies"]] == [read_only.STUDY]
    assert len(report["runs"]) == 1


@pytest.mark.parametrize(("final_size", "trained_on", "retrained"), [(48, 48, True),
                                                                      (8, 16, False)])
def test_the_final_model_is_retrained_on_more_reviews_only_when_asked(
        small_imdb: Path, tiny_model_dir: str, tmp_path: Path, final_size: int, trained_on: int,
        retrained: bool) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    art = tmp_path / "art"
    assert main(["--quiet", "run", "--data", str(small_imdb), "--model", tiny_model_dir,
                 "--db", db, "--artifacts", str(art), "--trials", "1", "--train-size", "16",
                 "--final-train-size", str(final_size), "--eval-size", "16",
                 "--test-size", "20", "--max-length", "32"]) == 0
    final = next(r for r in _runs(db) if r.spec.stage == "finetuned")
    assert final.spec.config["trained_on"] == trained_on
    assert final.spec.config["device"] == "cpu"
    assert Path(final.spec.artifact).name.endswith(f"-n{final_size}") == retrained


def test_a_command_that_fails_before_writing_leaves_no_database_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "new" / "runs" / "s.db"
    args = ["--quiet", "baseline", "--data", str(tmp_path / "nowhere/x"), "--db", f"sqlite:///{db}"]
    assert main(args) == 1
    assert "no such directory" in _error_line(capsys)
    assert not (tmp_path / "new").exists()  # neither the file nor the folders made for it


def test_a_failing_command_keeps_a_database_file_that_was_there_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    open_store(db).close()  # created (and migrated) by an earlier command, still empty
    before = (tmp_path / "s.db").read_bytes()
    assert main(["--quiet", "baseline", "--data", str(tmp_path / "nowhere/x"), "--db", db]) == 1
    assert (tmp_path / "s.db").read_bytes() == before


def test_commands_that_find_nothing_name_the_database_they_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    open_store(empty).close()
    for db in (missing, empty):
        assert main(["report", "--db", db]) == 0
        note = capsys.readouterr().out.strip().splitlines()[-1]
        assert db in note and "python -m trainer baseline" in note, note
        assert main(["predict", "fine", "--db", db]) == 1
        assert db in _error_line(capsys)
    assert main(["--quiet", "final", "--db", empty, "--artifacts", str(tmp_path / "art")]) == 1
    line = _error_line(capsys)
    assert "no study 'imdb-finetune'" in line and empty in line
    assert not (tmp_path / "missing.db").exists()


def test_a_database_password_is_masked_where_nothing_was_found(
    pg_schema_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_schema_url.replace("postgres@", "postgres:hunter2@", 1)  # trust auth ignores it
    assert main(["report", "--db", url]) == 0
    note = capsys.readouterr().out.strip().splitlines()[-1]
    assert "hunter2" not in note and "postgres:***@" in note, note


def test_tune_shows_trials_and_epochs_as_they_go(
    small_imdb: Path, tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    space = {"search_space": {"num_train_epochs": {"low": 2, "high": 2},
                              "per_device_train_batch_size": {"choices": [8]}}}
    config = tmp_path / "run.json"
    config.write_text(json.dumps(space))
    caplog.set_level("INFO", logger="trainer")
    assert main(["tune", "--data", str(small_imdb), "--model", tiny_model_dir, "--trials", "1",
                 "--train-size", "8", "--eval-size", "8", "--max-length", "16",
                 "--db", f"sqlite:///{tmp_path / 's.db'}", "--artifacts", str(tmp_path / "art"),
                 "--config", str(config)]) == 0
    bars = capsys.readouterr().err
    assert "trials: 100%" in bars and "1/1" in bars
    assert "trial 0, epoch 2/2" in bars and "best " in bars  # the bar's postfix
    lines = [r.getMessage() for r in caplog.records if r.name == "trainer.tuning.study"]
    assert [m.split(":")[0] for m in lines] == ["trial 0, epoch 1/2", "trial 0, epoch 2/2"]


def test_a_library_line_is_printed_once_beside_its_own_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    library = logging.getLogger("somelibrary")  # as huggingface_hub: own handler, propagates
    own = logging.StreamHandler(sys.stderr)
    library.addHandler(own)
    console = ConsoleHandler()
    logging.root.addHandler(console)
    try:
        logging.getLogger("somelibrary.http").warning("Retrying in 1s [Retry 1/5].")
        logging.getLogger("trainer.stages").warning("ours")
    finally:
        logging.root.removeHandler(console)
        library.removeHandler(own)
    assert capsys.readouterr().err.splitlines() == ["Retrying in 1s [Retry 1/5].", "ours"]


def test_a_command_that_fails_after_writing_keeps_the_database_it_created(
    small_imdb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["--quiet", "run", "--data", str(small_imdb), "--model", str(tmp_path / "none"),
                 "--db", db, "--artifacts", str(tmp_path / "art")]) == 1
    assert "does not exist" in _error_line(capsys)  # the pretrained stage, after the baseline
    assert [r.spec.stage for r in _runs(db)] == ["baseline"]
