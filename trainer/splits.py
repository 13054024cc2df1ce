"""Review splits: row-aligned texts, labels and ids, and seeded label-stratified subsets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from storage.records import Predictions
from trainer.errors import DataError


@dataclass(frozen=True, eq=False)
class Split:
    """One split of reviews: texts, 0/1 labels (1 positive) and stable review ids, row-aligned.

    ratings: each review's star rating where the source has one (aclImdb file names, a
    `rating` column), else None.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    ids: tuple[str, ...]
    name: str
    ratings: np.ndarray | None = None

    def __post_init__(self) -> None:
        labels = _frozen_ints(self.labels)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "ids", tuple(self.ids))
        if labels.ndim != 1 or not len(self.texts) == len(labels) == len(self.ids):
            raise ValueError(
                f"texts, labels and ids must be 1-D and equally long, got {len(self.texts)}, "
                f"{labels.shape} and {len(self.ids)}"
            )
        if self.ratings is not None:
            ratings = _frozen_ints(self.ratings)
            object.__setattr__(self, "ratings", ratings)
            if ratings.shape != labels.shape:
                raise ValueError(f"ratings must be as long as the labels, got {ratings.shape} "
                                 f"and {labels.shape}")

    def __len__(self) -> int:
        return len(self.ids)

    def predictions(self, probs: Sequence[float]) -> Predictions:
        """A model's positive-class probabilities on these reviews, ready to store."""
        return Predictions(self.ids, tuple(int(x) for x in self.labels),
                           tuple(float(p) for p in probs), self.texts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (
            self.name == other.name
            and self.ids == other.ids
            and self.texts == other.texts
            and np.array_equal(self.labels, other.labels)
        )

    __hash__ = None  # type: ignore[assignment]  # numpy labels are not hashable

    def take(self, idx: Sequence[int] | np.ndarray, name: str | None = None) -> Split:
        """The rows at `idx`, in that order.

        Args:
            idx: row positions (or a boolean mask as long as the split).
            name: the new split's name; the same name when None.

        Returns:
            A new Split.
        """
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.intp, copy=False)
        return Split(
            texts=tuple(self.texts[i] for i in idx),
            labels=self.labels[idx],
            ids=tuple(self.ids[i] for i in idx),
            name=self.name if name is None else name,
            ratings=None if self.ratings is None else self.ratings[idx],
        )


def _frozen_ints(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """A read-only int64 array; a private copy keeps the frozen split frozen."""
    array = np.asarray(values, dtype=np.int64)
    if array.flags.writeable:
        array = array.copy()
        array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Dataset:
    """The train and test splits and where they came from (hub id or resolved path)."""

    train: Split
    test: Split
    source: str


def stratified_subset(split: Split, n: int | None, seed: int) -> Split:
    """A seeded, label-stratified subset of `n` rows, kept in the split's order.

    Args:
        split: the rows to draw from.
        n: how many rows; None or at least len(split) keeps the whole split.
        seed: the same seed gives the same rows.

    Returns:
        The subset (the split itself when nothing is dropped).

    Raises:
        ValueError: n is below 1.
    """
    if n is None or n >= len(split):
        return split
    idx = _stratified_indices(split.labels, n, np.random.default_rng(seed))
    return split.take(np.sort(idx))


def train_validation(
    split: Split, train_size: int | None, eval_size: int, seed: int
) -> tuple[Split, Split]:
    """Carve a seeded, label-stratified validation set out of `split`; train on the other rows.

    The validation rows depend only on the split, `eval_size` and `seed`, not on `train_size`.

    Args:
        split: the train split.
        train_size: training rows (a stratified subset of the rest); None uses all the rest.
        eval_size: validation rows.
        seed: the same seed gives the same rows.

    Returns:
        (training rows named like `split`, validation rows named "validation"), disjoint.

    Raises:
        DataError: the sizes do not fit the split.
    """
    if eval_size < 1 or eval_size >= len(split):
        raise DataError(
            f"the validation set needs 1 to {len(split) - 1} rows of the {len(split)}-review "
            f"{split.name} split, got eval_size={eval_size}; pass a smaller --eval-size"
        )
    rng = np.random.default_rng(seed)
    held = np.zeros(len(split), dtype=bool)
    held[_stratified_indices(split.labels, eval_size, rng)] = True
    rest = np.flatnonzero(~held)
    if train_size is not None and train_size < len(rest):
        if train_size < 1:
            raise DataError(f"train_size must be at least 1, got {train_size}")
        rest = np.sort(rest[_stratified_indices(split.labels[rest], train_size, rng)])
    return split.take(rest), split.take(np.flatnonzero(held), name="validation")


def _stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` positions drawn per label in proportion to its count (largest remainder)."""
    if n < 1:
        raise ValueError(f"a subset needs at least 1 row, got n={n}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / counts.sum()
    take = np.floor(exact).astype(int)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    picks = [
        rng.permutation(np.flatnonzero(labels == c))[:k]
        for c, k in zip(classes, take, strict=True)
    ]
    return np.concatenate(picks)
