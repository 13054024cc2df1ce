"""Exact and near duplicates on built splits with each kind planted, and none where none is."""
from __future__ import annotations

from storage.records import ReviewRef
from tests.trainer.audit.built_data import planted, replaced, split
from trainer.audit.duplicates import (
    NEAR_THRESHOLD,
    find_duplicates,
    jaccard,
    near_pairs,
    normalise,
    shingles,
)


def test_normalise_collapses_whitespace_and_case() -> None:
    assert normalise("  Not\tGOOD \n\n at  ALL ") == "not good at all"
    assert normalise("Straße") == normalise("STRASSE")  # casefold, not lower


def test_shingles_are_word_trigrams_and_a_short_text_is_one() -> None:
    assert shingles("a b c d") == {b"a b c", b"b c d"}
    assert shingles("two words") == {b"two words"}
    assert shingles("") == set()
    assert jaccard({b"x", b"y"}, {b"y", b"z"}) == 1 / 3
    assert jaccard(set(), set()) == 0.0


def test_planted_exact_near_and_cross_split_duplicates_are_found() -> None:
    data = planted()
    found = find_duplicates(data.train, data.test)
    exact = {g.scope: g for g in found.groups if g.kind == "exact"}
    near = [g for g in found.groups if g.kind == "near"]

    assert len([g for g in found.groups if g.kind == "exact"]) == 3
    assert exact["train"].members == (ReviewRef("train", "train/neg/2", 0),
                                      ReviewRef("train", "train/neg/4", 1))
    assert exact["train"].conflicting
    assert exact["test"].members == (ReviewRef("test", "test/pos/1", 1),
                                     ReviewRef("test", "test/pos/3", 1))
    assert not exact["test"].conflicting
    assert [m.review_id for m in exact["cross"].members] == ["train/neg/10", "test/pos/5"]
    assert found.leaked_test_ids == ("test/pos/5",)
    (group,) = near
    assert (group.scope, group.conflicting) == ("train", False)
    assert [m.review_id for m in group.members] == ["train/pos/7", "train/neg/8"]


def test_near_groups_never_repeat_an_exact_pair() -> None:
    data = planted()
    found = find_duplicates(data.train, data.test)
    exact_pairs = {frozenset((a.review_id, b.review_id)) for g in found.groups
                   if g.kind == "exact" for a in g.members for b in g.members if a != b}
    near_ids = [{m.review_id for m in g.members} for g in found.groups if g.kind == "near"]
    assert all(not any(pair <= ids for pair in exact_pairs) for ids in near_ids)


def test_a_near_duplicate_of_an_exact_group_joins_all_its_reviews() -> None:
    train, test = split("train", 20, 3), split("test", 10, 4)
    words = train.texts[0].split()
    words[20] = "changed"
    train = replaced(replaced(train, 1, train.texts[0]), 2, " ".join(words))
    found = find_duplicates(train, test)
    (near,) = [g for g in found.groups if g.kind == "near"]
    assert [m.review_id for m in near.members] == ["train/neg/0", "train/pos/1", "train/neg/2"]
    assert near.conflicting  # labels 0, 1, 0


def test_texts_below_the_threshold_are_not_near_duplicates() -> None:
    base = normalise(planted().train.texts[8]).split()
    far = base[:]
    for i in (5, 15, 25, 35):  # four words changed in 41: Jaccard 27/51
        far[i] = f"other{i}"
    near = base[:]
    near[20] = "other"
    texts = [" ".join(base), " ".join(far), " ".join(near)]
    assert jaccard(shingles(texts[0]), shingles(texts[1])) < NEAR_THRESHOLD
    assert near_pairs(texts) == [(0, 2)]


def test_splits_without_overlap_or_duplicates_give_empty_findings() -> None:
    found = find_duplicates(split("train", 30, 5), split("test", 30, 6))
    assert found.groups == () and found.leaked_test_ids == ()


def test_a_tiny_source_and_empty_texts_give_no_error() -> None:
    one = split("train", 1, 7)
    blank = replaced(split("test", 2, 8), 0, "   ")
    blank = replaced(blank, 1, "\n")
    found = find_duplicates(one, blank)
    (group,) = found.groups  # the two blank test reviews are one exact text
    assert (group.kind, group.scope) == ("exact", "test")
    assert found.leaked_test_ids == ()
