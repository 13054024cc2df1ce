"""Exact and near duplicate reviews within and across splits; the test reviews seen in train."""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from storage.records import DuplicateGroup, ReviewRef
from trainer.splits import Split

# Two distinct normalised texts are near duplicates when the Jaccard similarity of their sets of
# word 3-grams is at least NEAR_THRESHOLD: on IMDB that keeps reposts with a few words changed
# and no two merely similar reviews (one changed word in 200 leaves J ≈ 0.97).
NEAR_THRESHOLD = 0.8
SHINGLE_WORDS = 3
# MinHash LSH only proposes candidates; each is checked on the exact shingle sets. Candidates
# come from a lower LSH threshold so pairs just above NEAR_THRESHOLD are rarely missed: on all
# 50,000 IMDB reviews 128 permutations at 0.7 found the 37 pairs that 0.5 finds (0.8: 33;
# 64 permutations at 0.7: 35) in about as much time, which hashing dominates.
NUM_PERM = 128
LSH_THRESHOLD = 0.7
MINHASH_SEED = 1
METHOD = (f"exact: same text after collapsing whitespace and case; near: Jaccard ≥ "
          f"{NEAR_THRESHOLD} of word {SHINGLE_WORDS}-gram sets (candidates from datasketch "
          f"MinHash LSH, {NUM_PERM} permutations, threshold {LSH_THRESHOLD})")


@dataclass(frozen=True)
class DuplicateFindings:
    """Duplicate groups (exact first, then near) and the test reviews whose text train holds.

    An exact group holds every review of one normalised text; its scope is "cross" when both
    splits have it. A near group joins distinct texts (linked by near pairs, so never a pair
    that is already exact) with every review of each of them.
    """

    groups: tuple[DuplicateGroup, ...]
    leaked_test_ids: tuple[str, ...]


def normalise(text: str) -> str:
    """The text compared for exact duplicates: whitespace runs to one space, stripped, casefolded.

    Args:
        text: a review.

    Returns:
        The normalised text.
    """
    return " ".join(text.split()).casefold()


def shingles(normalised: str, words: int = SHINGLE_WORDS) -> set[bytes]:
    """The set of word n-grams of a normalised text (a shorter text is one shingle).

    Args:
        normalised: a text from `normalise`.
        words: words per shingle.

    Returns:
        UTF-8 shingles; empty for an empty text.
    """
    tokens = normalised.split()
    span = max(1, len(tokens) - words + 1)
    return {" ".join(tokens[i:i + words]).encode() for i in range(span)} if tokens else set()


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    """|a ∩ b| / |a ∪ b|; 0 for two empty sets."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def find_duplicates(train: Split, test: Split, *, threshold: float = NEAR_THRESHOLD,
                    num_perm: int = NUM_PERM, progress: bool = False) -> DuplicateFindings:
    """Exact and near duplicates within train, within test and across the two.

    Args:
        train: the train split.
        test: the test split.
        threshold: the Jaccard similarity of word 3-gram sets at which texts are near duplicates.
        num_perm: MinHash permutations.
        progress: show a progress bar while sketching the texts.

    Returns:
        The groups and the ids of the test reviews whose normalised text is in train.
    """
    refs = _refs(train) + _refs(test)
    by_text: dict[str, list[int]] = {}
    for i, text in enumerate([*map(normalise, train.texts), *map(normalise, test.texts)]):
        by_text.setdefault(text, []).append(i)
    texts = list(by_text)
    exact = [_group("exact", [refs[i] for i in rows]) for rows in by_text.values()
             if len(rows) > 1]
    leaked = tuple(m.review_id for g in exact if g.scope == "cross"
                   for m in g.members if m.split == "test")
    pairs = near_pairs(texts, threshold=threshold, num_perm=num_perm, progress=progress)
    near = [_group("near", [refs[i] for t in component for i in by_text[texts[t]]])
            for component in _components(pairs, len(texts))]
    return DuplicateFindings(tuple(exact + near), leaked)


def near_pairs(texts: Sequence[str], *, threshold: float = NEAR_THRESHOLD,
               num_perm: int = NUM_PERM, progress: bool = False) -> list[tuple[int, int]]:
    """Pairs (i < j) of distinct normalised texts whose shingle sets' Jaccard ≥ threshold.

    Args:
        texts: distinct normalised texts.
        threshold: the Jaccard similarity kept.
        num_perm: MinHash permutations.
        progress: show a progress bar.

    Returns:
        The pairs, in the order found.
    """
    from datasketch import MinHash, MinHashLSH
    from tqdm.auto import tqdm

    sets = [shingles(t) for t in texts]
    lsh = MinHashLSH(threshold=min(threshold, LSH_THRESHOLD), num_perm=num_perm)
    sketches = MinHash.generator(sets, num_perm=num_perm, seed=MINHASH_SEED,
                                 hashfunc=zlib.crc32)  # crc32: deterministic, 2x sha1's speed
    pairs = []
    bar = tqdm(zip(range(len(sets)), sketches), total=len(sets), desc="audit: near duplicates",
               unit="review", disable=not progress)
    for j, sketch in bar:
        if not sets[j]:
            continue
        for i in sorted(lsh.query(sketch)):  # only earlier texts are indexed yet
            if jaccard(sets[i], sets[j]) >= threshold:
                pairs.append((i, j))
        lsh.insert(j, sketch, check_duplication=False)
    return pairs


def _refs(split: Split) -> list[ReviewRef]:
    return [ReviewRef(split.name, rid, int(label))
            for rid, label in zip(split.ids, split.labels, strict=True)]


def _group(kind: str, members: list[ReviewRef]) -> DuplicateGroup:
    splits = {m.split for m in members}
    scope = "cross" if len(splits) > 1 else splits.pop()
    return DuplicateGroup(kind, scope, tuple(members), len({m.label for m in members}) > 1)


def _components(pairs: Sequence[tuple[int, int]], n: int) -> list[list[int]]:
    """Connected components of more than one node, each sorted, ordered by their first node."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        parent[max(a, b)] = min(a, b)
    found: dict[int, list[int]] = {}
    for i in sorted({x for pair in pairs for x in pair}):
        found.setdefault(root(i), []).append(i)
    return sorted(found.values())
