"""Star ratings kept from aclImdb file names and a `rating` column; they feed rating slices."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.data import load_imdb
from trainer.splits import Split, stratified_subset, train_validation


def acl_folder(root: Path) -> Path:
    """An aclImdb folder: two reviews per split and label, files ID_RATING.txt."""
    for split in ("train", "test"):
        for folder, ratings in (("neg", (1, 4)), ("pos", (10, 7))):
            (root / "aclImdb" / split / folder).mkdir(parents=True)
            for number, rating in enumerate(ratings):
                path = root / "aclImdb" / split / folder / f"{number}_{rating}.txt"
                path.write_text(f"{split} {folder} review {number}", encoding="utf-8")
    return root


def test_acl_imdb_file_names_give_each_review_its_rating(tmp_path: Path) -> None:
    data = load_imdb(str(acl_folder(tmp_path)))
    assert data.train.ids == ("train/neg/0", "train/neg/1", "train/pos/0", "train/pos/1")
    assert data.train.ratings.tolist() == [1, 4, 10, 7]
    assert data.test.ratings.tolist() == [1, 4, 10, 7]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_rating_column_is_kept_and_a_source_without_one_has_none(tmp_path: Path,
                                                                   fmt: str) -> None:
    frame = pd.DataFrame({"text": ["good", "bad", "fine"], "label": [1, 0, 1],
                          "rating": [9, 2, 7]})
    for split in ("train", "test"):
        path = tmp_path / f"{split}.{fmt}"
        chosen = frame if split == "train" else frame.drop(columns="rating")
        if fmt == "parquet":
            chosen.to_parquet(path)
        elif fmt == "csv":
            chosen.to_csv(path, index=False)
        else:
            chosen.to_json(path, orient="records", lines=True)
    data = load_imdb(str(tmp_path))
    assert data.train.ratings.tolist() == [9, 2, 7]
    assert data.test.ratings is None


def test_a_malformed_rating_column_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for split in ("train", "test"):
        pd.DataFrame({"text": ["a", "b"], "label": [1, 0], "rating": ["9", "nine"]}).to_csv(
            tmp_path / f"{split}.csv", index=False)
    with caplog.at_level(logging.WARNING):
        data = load_imdb(str(tmp_path))
    assert data.train.ratings is None and data.train.labels.tolist() == [1, 0]
    assert "ratings are left out" in caplog.text


def test_subsets_keep_the_ratings_row_aligned() -> None:
    s = Split(tuple(f"t{i}" for i in range(10)), np.arange(10) % 2,
              tuple(f"id{i}" for i in range(10)), "train", np.arange(10) + 1)
    taken = s.take([3, 1])
    assert taken.ratings.tolist() == [4, 2]
    sub = stratified_subset(s, 4, seed=0)
    assert [int(i[2:]) + 1 for i in sub.ids] == sub.ratings.tolist()
    rest, validation = train_validation(s, None, 2, seed=0)
    assert [int(i[2:]) + 1 for i in validation.ids] == validation.ratings.tolist()
    assert not taken.ratings.flags.writeable
    assert Split(("a",), [1], ("x",), "test").ratings is None
    with pytest.raises(ValueError, match="ratings must be as long"):
        Split(("a",), [1], ("x",), "test", [1, 2])
