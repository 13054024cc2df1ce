"""Data loading: every source format gives the same splits; every bad input is a DataError."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.data import DataError, load_imdb
from trainer.splits import Split, stratified_subset, train_validation

# Reviews as aclImdb holds them: (review number, rating, text); texts hold the awkward cases.
REVIEWS = {
    "train": {
        "neg": [
            (0, 3, 'Dull, "slow", long.<br /><br />No.'),
            (2, 1, "Bad\nfilm"),
            (10, 4, "Meh "),
        ],
        "pos": [(1, 9, "Great — truly great 🎬"), (3, 10, "Loved it, really"), (7, 8, "  ok\r\n")],
    },
    "test": {
        "neg": [(4, 2, "Awful; just awful"), (5, 1, "Zzz")],
        "pos": [(0, 7, "Fine, fine"), (12, 10, "Best\u2028of the year")],  # U+2028 is no newline
    },
}


def rows(split: str) -> list[dict[str, object]]:
    """The rows in aclImdb order: negatives then positives, each by review number."""
    out = []
    for label, folder in enumerate(("neg", "pos")):
        for number, _, text in sorted(REVIEWS[split][folder]):
            out.append({"text": text, "label": label, "review_id": f"{split}/{folder}/{number}"})
    return out


def write_acl(root: Path, reviews: dict = REVIEWS) -> Path:
    for split, folders in reviews.items():
        for folder, items in folders.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for number, rating, text in items:
                (root / split / folder / f"{number}_{rating}.txt").write_bytes(text.encode())
    return root


def write_table(folder: Path, fmt: str, split: str, records: list[dict], **csv_options) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt == "jsonl":
        lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        path.write_text("".join(lines), encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]), **csv_options)
            writer.writeheader()
            writer.writerows(records)
    return path


def write_dir(folder: Path, fmt: str, drop_ids: bool = False) -> Path:
    for split in ("train", "test"):
        records = [
            {k: v for k, v in r.items() if not (drop_ids and k == "review_id")}
            for r in rows(split)
        ]
        write_table(folder, fmt, split, records)
    return folder


def error_of(source: Path | str) -> str:
    with pytest.raises(DataError) as info:
        load_imdb(str(source))
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "Traceback" not in message  # one paragraph
    return message


# --- every format gives the same splits ------------------------------------------------------


def test_every_format_and_the_acl_folder_give_identical_splits(tmp_path: Path) -> None:
    acl = load_imdb(str(write_acl(tmp_path / "aclImdb")))
    assert acl.train.ids == (
        "train/neg/0",
        "train/neg/2",
        "train/neg/10",
        "train/pos/1",
        "train/pos/3",
        "train/pos/7",
    )
    assert acl.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert acl.train.texts[0] == 'Dull, "slow", long.<br /><br />No.'  # kept exactly
    assert acl.train.texts[-1] == "  ok\r\n"
    for fmt in ("parquet", "csv", "jsonl"):
        loaded = load_imdb(str(write_dir(tmp_path / fmt, fmt)))
        assert loaded.train == acl.train, fmt
        assert loaded.test == acl.test, fmt
        assert loaded.source == str((tmp_path / fmt).resolve())


def test_acl_parent_folder_is_accepted_and_extras_ignored(tmp_path: Path) -> None:
    write_acl(tmp_path / "aclImdb")
    (tmp_path / "aclImdb" / "train" / "unsup").mkdir()
    (tmp_path / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text("unlabelled")
    (tmp_path / "aclImdb" / "train" / "urls_pos.txt").write_text("http://x")
    (tmp_path / "aclImdb" / "train" / "labeledBow.feat").write_text("0:1")
    (tmp_path / "aclImdb" / "imdb.vocab").write_text("the")
    loaded = load_imdb(str(tmp_path))
    assert len(loaded.train) == 6 and len(loaded.test) == 4
    assert loaded.train == load_imdb(str(tmp_path / "aclImdb")).train


def test_rows_without_review_id_get_split_and_row(tmp_path: Path) -> None:
    loaded = load_imdb(str(write_dir(tmp_path, "csv", drop_ids=True)))
    assert loaded.train.ids == tuple(f"train/{i}" for i in range(6))
    assert loaded.test.ids == ("test/0", "test/1", "test/2", "test/3")


def test_csv_string_labels_extra_columns_and_parquet_first(tmp_path: Path) -> None:
    for split in ("train", "test"):
        records = [{"stars": 5, "label": f" {r['label']}", "text": r["text"]} for r in rows(split)]
        write_table(tmp_path, "csv", split, records)
    loaded = load_imdb(str(tmp_path))
    assert loaded.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert loaded.train.labels.dtype == np.int64
    write_dir(tmp_path, "parquet")  # parquet is preferred when both exist
    assert load_imdb(str(tmp_path)).train.ids[0] == "train/neg/0"


def test_path_with_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_dir(tmp_path / "imdb", "jsonl")
    assert len(load_imdb("~/imdb").train) == 6


# --- errors ----------------------------------------------------------------------------------


def test_wrong_columns_name_the_file_and_what_was_found(tmp_path: Path) -> None:
    write_dir(tmp_path, "csv")
    (tmp_path / "train.csv").write_text("review,sentiment\nGood,pos\n")
    message = error_of(tmp_path)
    assert (
        "expected the columns ['label', 'text'] in train.csv, found ['review', 'sentiment']"
        in (message)
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_word_labels_are_named_with_a_row(tmp_path: Path, fmt: str) -> None:
    write_dir(tmp_path, fmt)
    records = [{"text": "a", "label": "neg"}, {"text": "b", "label": "pos"}]
    write_table(tmp_path, fmt, "train", records)
    message = error_of(tmp_path)
    assert f"train.{fmt}" in message
    assert "'neg', 'pos'" in message and "row 0" in message and "0/1" in message


def test_numeric_labels_other_than_0_1_are_named(tmp_path: Path) -> None:
    write_dir(tmp_path, "parquet")
    write_table(
        tmp_path, "parquet", "test", [{"text": "a", "label": 0}, {"text": "b", "label": 2}]
    )
    message = error_of(tmp_path)
    assert "test.parquet" in message and "found 2" in message and "row 1" in message


def test_csv_row_numbers_come_with_line_numbers(tmp_path: Path) -> None:
    write_dir(tmp_path, "csv")
    (tmp_path / "train.csv").write_text('text,label\n"two\nlines",1\nok,5\n')
    assert "(first at row 1, line 4)" in error_of(tmp_path)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_empty_split_is_an_error(tmp_path: Path, fmt: str) -> None:
    write_dir(tmp_path, fmt)
    if fmt == "parquet":
        pq.write_table(
            pa.table({"text": pa.array([], pa.string()), "label": []}), tmp_path / "test.parquet"
        )
    else:
        (tmp_path / f"test.{fmt}").write_text("text,label\n" if fmt == "csv" else "")
    message = error_of(tmp_path)
    assert f"test.{fmt}" in message
    assert "no rows" in message


def test_missing_test_file_is_named(tmp_path: Path) -> None:
    write_table(tmp_path, "jsonl", "train", rows("train"))
    message = error_of(tmp_path)
    assert "found train.jsonl" in message and "no test file" in message


@pytest.mark.parametrize(
    ("fmt", "content", "words"),
    [
        ("parquet", b"PAR1 this is not parquet", "could not read train.parquet"),
        ("jsonl", b'{"text": "a", "label": 0}\n{"text": "b", label: 1}\n', "line 2"),
        ("jsonl", b'["text", 0]\n', "not a JSON object"),
        ("csv", b'text,label\n"ok",1\nsurplus,1,2\n', "line 3 has 3 fields"),
        ("csv", b"", "is empty"),
    ],
)
def test_malformed_files_are_parse_errors(tmp_path: Path, fmt: str, content: bytes, words: str):
    write_dir(tmp_path, fmt)
    (tmp_path / f"train.{fmt}").write_bytes(content)
    message = error_of(tmp_path)
    assert words in message and f"train.{fmt}" in message


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_invalid_utf8_names_file_line_and_offset(tmp_path: Path, fmt: str) -> None:
    write_dir(tmp_path, fmt)
    good = (tmp_path / f"test.{fmt}").read_bytes()
    first_newline = good.index(b"\n")
    (tmp_path / f"test.{fmt}").write_bytes(
        good[: first_newline + 3] + b"\xff" + good[first_newline + 3 :]
    )
    message = error_of(tmp_path)
    assert f"test.{fmt} is not valid UTF-8" in message
    assert f"offset {first_newline + 3}" in message and "line 2" in message


def test_invalid_utf8_in_parquet_names_the_row(tmp_path: Path) -> None:
    write_dir(tmp_path, "parquet")
    texts = pa.array([b"fine", b"bro\xffken"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": texts, "label": [0, 1]}), tmp_path / "train.parquet")
    message = error_of(tmp_path)
    assert "train.parquet" in message and "UTF-8" in message and "row 1" in message


def test_invalid_utf8_in_acl_file_names_the_file(tmp_path: Path) -> None:
    root = write_acl(tmp_path / "aclImdb")
    (root / "test" / "pos" / "3_9.txt").write_bytes(b"caf\xe9")
    message = error_of(root)
    assert "3_9.txt" in message and "UTF-8" in message and "offset 3" in message


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_null_text_is_an_error(tmp_path: Path, fmt: str) -> None:
    write_dir(tmp_path, fmt)
    records = [{"text": "fine", "label": 0}, {"text": None, "label": 1}]
    write_table(tmp_path, fmt, "train", records)
    message = error_of(tmp_path)
    assert "train." + fmt in message and "row 1" in message and "no text" in message


def test_text_that_is_not_a_string_is_an_error(tmp_path: Path) -> None:
    write_dir(tmp_path, "jsonl")
    write_table(tmp_path, "jsonl", "train", [{"text": "ok", "label": 0}, {"text": 5, "label": 1}])
    message = error_of(tmp_path)
    assert "train.jsonl: row 1, line 2 holds a int as its text" in message


def test_unreadable_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dir(tmp_path, "csv")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    message = error_of(tmp_path)
    assert "could not read" in message and "train.csv: Permission denied" in message


def test_duplicate_review_ids_are_an_error(tmp_path: Path) -> None:
    write_dir(tmp_path, "jsonl")
    records = [
        {"text": "a", "label": 0, "review_id": "x"},
        {"text": "b", "label": 1, "review_id": "x"},
    ]
    write_table(tmp_path, "jsonl", "test", records)
    assert "'x' appears twice" in error_of(tmp_path)


@pytest.mark.parametrize("source", ["./no/such/dir", "/no/such/dir", "~/no-such-dir-xyz", "a b"])
def test_missing_paths_say_no_such_directory(source: str) -> None:
    message = error_of(source)
    assert message.startswith(f"no such directory: {source}") and "--data" in message


def test_empty_source_is_not_the_current_directory() -> None:
    assert error_of("  ").startswith("no data source was given")


def test_folder_without_data_and_a_file_are_errors(tmp_path: Path) -> None:
    assert "neither train/test parquet" in error_of(tmp_path)
    (tmp_path / "reviews.csv").write_text("text,label\n")
    assert "expected a directory" in error_of(tmp_path / "reviews.csv")


def test_incomplete_acl_folder_names_what_is_missing(tmp_path: Path) -> None:
    write_acl(tmp_path / "aclImdb", {"train": REVIEWS["train"]})
    message = error_of(tmp_path)
    assert "lacks test/neg, test/pos" in message


# --- the hub ---------------------------------------------------------------------------------


def test_unreachable_hub_is_one_paragraph_naming_the_options() -> None:
    # tests/conftest.py sets HF_HUB_OFFLINE=1, which makes the hub fail at once
    message = error_of("stanfordnlp/imdb")
    assert "hub could not be reached for stanfordnlp/imdb" in message
    assert "--data DIR (or IMDB_DATA)" in message and "aclImdb" in message
    assert "../shared/data/imdb" in message and "\n" not in message


def test_hub_errors_are_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    def missing(source: str) -> None:
        raise DatasetNotFoundError(f"Dataset '{source}' doesn't exist on the Hub")

    def offline(source: str) -> None:
        raise ConnectionError(f"Couldn't reach '{source}' on the Hub (ConnectError)")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    assert "neither a local directory nor a dataset" in error_of("someone/nothing")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert "could not be reached for someone/nothing" in error_of("someone/nothing")


def test_hub_dataset_keeps_train_and_test(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def split(labels: list[int]) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"text": [f"r{i}" for i in labels], "label": labels})

    hub = datasets.DatasetDict(train=split([0, 1, 1]), test=split([1, 0]), unsupervised=split([0]))
    monkeypatch.setattr(datasets, "load_dataset", lambda source: hub)
    loaded = load_imdb("stanfordnlp/imdb")
    assert loaded.source == "stanfordnlp/imdb"
    assert loaded.train.ids == ("train/0", "train/1", "train/2")
    assert loaded.test.labels.tolist() == [1, 0] and loaded.test.texts == ("r1", "r0")
    monkeypatch.setattr(
        datasets, "load_dataset", lambda source: datasets.DatasetDict(train=hub["train"])
    )
    assert "expected train and test" in error_of("stanfordnlp/imdb")


# --- Split, subsets and validation -----------------------------------------------------------


def make_split(n_neg: int, n_pos: int, name: str = "train") -> Split:
    labels = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
    ids = tuple(f"{name}/{i}" for i in range(len(labels)))
    return Split(tuple(f"text {i}" for i in range(len(labels))), labels, ids, name)


def test_split_take_equality_and_frozen_labels() -> None:
    split = make_split(3, 2)
    part = split.take([4, 0])
    assert part.ids == ("train/4", "train/0") and part.labels.tolist() == [1, 0]
    assert part.name == "train" and split.take([1], name="validation").name == "validation"
    assert split.take(split.labels == 1) == split.take([3, 4])
    assert split == make_split(3, 2) and split != make_split(2, 3)
    with pytest.raises(ValueError):
        split.labels[0] = 1
    with pytest.raises(ValueError, match="equally long"):
        Split(("a",), np.array([0, 1]), ("x", "y"), "train")


def test_stratified_subset_keeps_proportions_order_and_seed() -> None:
    split = make_split(300, 100)
    subset = stratified_subset(split, 40, seed=1)
    assert len(subset) == 40 and int(subset.labels.sum()) == 10
    positions = [int(i.split("/")[1]) for i in subset.ids]
    assert positions == sorted(positions)  # the split's order is kept
    assert stratified_subset(split, 40, seed=1) == subset
    assert stratified_subset(split, 40, seed=2) != subset
    assert stratified_subset(split, None, seed=1) is split
    assert (
        stratified_subset(split, 400, seed=1) is split
        and stratified_subset(split, 10**6, 1) is split
    )


def test_train_validation_is_disjoint_stratified_and_seeded() -> None:
    split = make_split(500, 500)
    train, validation = train_validation(split, None, 100, seed=7)
    assert validation.name == "validation" and train.name == "train"
    assert len(validation) == 100 and int(validation.labels.sum()) == 50
    assert len(train) == 900 and not set(train.ids) & set(validation.ids)
    small, validation_again = train_validation(split, 200, 100, seed=7)
    assert validation_again == validation  # the validation rows do not depend on train_size
    assert len(small) == 200 and int(small.labels.sum()) == 100
    assert set(small.ids) <= set(train.ids)
    assert train_validation(split, 200, 100, seed=7)[0] == small
    assert train_validation(split, 200, 100, seed=8)[1] != validation


def test_train_validation_rejects_sizes_that_do_not_fit() -> None:
    with pytest.raises(DataError, match="smaller --eval-size"):
        train_validation(make_split(5, 5), None, 10, seed=0)


# --- the real IMDB ---------------------------------------------------------------------------


@pytest.mark.slow
def test_real_imdb_parquet_and_an_acl_copy_of_its_rows_agree(imdb_dir: Path, tmp_path: Path):
    imdb = load_imdb(str(imdb_dir))
    for split in (imdb.train, imdb.test):
        assert len(split) == 25_000
        assert np.bincount(split.labels).tolist() == [12_500, 12_500]
        assert len(set(split.ids)) == 25_000
    picks, acl = {}, {}
    for name in ("train", "test"):
        table = pq.read_table(imdb_dir / f"{name}.parquet", columns=["review_id", "rating"])
        picks[name] = np.r_[np.arange(0, 12_500, 250), np.arange(12_500, 25_000, 250)]
        chosen = getattr(imdb, name).take(picks[name])
        ratings = table["rating"].to_pylist()
        acl[name] = {"neg": [], "pos": []}
        for row, review_id, text in zip(picks[name], chosen.ids, chosen.texts, strict=True):
            _, folder, number = review_id.split("/")
            acl[name][folder].append((int(number), ratings[row], text))
    root = write_acl(tmp_path / "aclImdb", acl)
    copy = load_imdb(str(tmp_path))
    assert len(copy.train) + len(copy.test) == 200
    assert copy.train == imdb.train.take(picks["train"])
    assert copy.test == imdb.test.take(picks["test"])
    assert root.exists()
