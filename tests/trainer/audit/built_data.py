"""Small built review splits for the audit tests: planted duplicates, a flipped label, ratings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainer.splits import Dataset, Split

POSITIVE = ("great", "wonderful", "brilliant", "moving", "superb", "delightful")
NEGATIVE = ("awful", "boring", "dreadful", "dull", "terrible", "tedious")
FILLER = ("the", "film", "story", "cast", "scene", "music", "director", "plot", "ending",
          "camera", "actor", "script", "score", "pace", "dialogue", "set")


def review(label: int, rng: np.random.Generator, words: int = 40) -> str:
    """A review whose sentiment words all agree with `label`; distinct for each draw."""
    mood = POSITIVE if label else NEGATIVE
    tokens = [str(rng.choice(mood)) if rng.random() < 0.3 else str(rng.choice(FILLER))
              for _ in range(words)]
    tokens.append(f"token{int(rng.integers(1_000_000_000))}")  # never two equal by chance
    return " ".join(tokens) + "."


def split(name: str, n: int, seed: int, *, ratings: bool = True) -> Split:
    """n reviews, half of each label, ids like aclImdb's (name/pos/i), ratings 1-4 and 7-10."""
    rng = np.random.default_rng(seed)
    labels = np.array([i % 2 for i in range(n)])
    texts = tuple(review(int(label), rng) for label in labels)
    ids = tuple(f"{name}/{'pos' if label else 'neg'}/{i}" for i, label in enumerate(labels))
    stars = np.where(labels == 1, 7 + np.arange(n) % 4, 1 + np.arange(n) % 4)
    return Split(texts, labels, ids, name, stars if ratings else None)


def replaced(s: Split, row: int, text: str, label: int | None = None) -> Split:
    """The split with one review's text (and label) replaced."""
    texts, labels = list(s.texts), s.labels.copy()
    texts[row] = text
    if label is not None:
        labels[row] = label
    return Split(tuple(texts), labels, s.ids, s.name, s.ratings)


def planted(n_train: int = 60, n_test: int = 40) -> Dataset:
    """Train and test with these planted (all else distinct):

    - an exact train duplicate with conflicting labels: train row 4 is row 2 (label 0) in
      other spacing and case, labelled 1;
    - an exact test duplicate: test row 3 is row 1 (both label 1);
    - a leak: test row 5 is train row 10 (both label 0);
    - a near duplicate in train: row 7 is row 8 with one word changed (both label 0; the word
      3-gram Jaccard is 36/42 ≈ 0.86);
    - a flipped label: train row 12 reads as strongly positive but is labelled 0.
    """
    train, test = split("train", n_train, 1), split("test", n_test, 2)
    train = replaced(train, 4, "  " + train.texts[2].upper().replace(" ", "   ") + "\n", label=1)
    test = replaced(test, 3, test.texts[1])
    test = replaced(test, 5, train.texts[10], label=int(train.labels[10]))
    words = train.texts[8].split()
    words[20] = "zzzchanged"
    train = replaced(train, 7, " ".join(words), label=int(train.labels[8]))
    strong = " ".join([*POSITIVE * 3, *train.texts[13].split()[:10]])
    train = replaced(train, 12, strong + " token12flipped.", label=0)
    return Dataset(train, test, "/built/planted")


def write_parquet(data: Dataset, folder: Path) -> Path:
    """The dataset as train.parquet/test.parquet with text, label, review_id, rating."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in (data.train, data.test):
        frame = pd.DataFrame({"text": list(s.texts), "label": s.labels, "review_id": list(s.ids)})
        if s.ratings is not None:
            frame["rating"] = s.ratings
        frame.to_parquet(folder / f"{s.name}.parquet")
    return folder
