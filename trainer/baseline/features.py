"""The baseline's feature columns: vocabulary index, token lookup, counts, explanation weights."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from trainer.baseline.cleaning import BREAK  # to map cleaned offsets back to the original


@dataclass(frozen=True)
class Index:
    """Lookup tables from words and word pairs to feature columns."""

    words: pa.Array
    unigram: np.ndarray  # word id → column; -1 when none, and at [-1] for unknown words
    pairs: pd.Index  # first_id * n_words + second_id, one per bigram column
    pair_cols: np.ndarray  # the bigrams' columns, then -1 for get_indexer's "not found"


def build_index(vocabulary: Sequence[str]) -> Index:
    parts = pc.split_pattern(pa.array(vocabulary, pa.large_string()), " ", max_splits=1)
    ends = parts.offsets.to_numpy()
    encoded = pc.dictionary_encode(pc.list_flatten(parts))
    codes = encoded.indices.to_numpy().astype(np.int64)
    first, second = codes[ends[:-1]], codes[ends[1:] - 1]
    is_pair = np.diff(ends) == 2
    unigram = np.full(len(encoded.dictionary) + 1, -1, dtype=np.int64)
    unigram[first[~is_pair]] = np.flatnonzero(~is_pair)
    keys = pd.Index(first[is_pair] * len(encoded.dictionary) + second[is_pair])
    return Index(encoded.dictionary, unigram, keys,
                  np.append(np.flatnonzero(is_pair), -1))


def lookup(index: Index, flat: pa.Array, doc: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per token: its document and unigram column; per adjacent pair: the bigram column (-1: none).

    The pair array is as long as the token array; entry i is the pair (token i, token i + 1).
    """
    ids = pc.fill_null(pc.index_in(flat, value_set=index.words), -1).to_numpy().astype(np.int64)
    uni = index.unigram[ids]
    pair = np.full(len(ids), -1, dtype=np.int64)
    both = np.flatnonzero((ids[:-1] >= 0) & (ids[1:] >= 0) & (doc[:-1] == doc[1:]))
    at = index.pairs.get_indexer(ids[both] * len(index.words) + ids[both + 1])
    pair[both] = index.pair_cols[at]
    return doc, uni, pair


def count_matrix(doc: np.ndarray, uni: np.ndarray, pair: np.ndarray, shape: tuple[int, int]
                  ) -> sp.csr_matrix:
    rows = np.concatenate([doc[uni >= 0], doc[pair >= 0]])
    cols = np.concatenate([uni[uni >= 0], pair[pair >= 0]])
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    return matrix


def occurrence_weights(x: sp.csr_matrix, coef: np.ndarray, uni: np.ndarray,
                        pair: np.ndarray) -> np.ndarray:
    """Each token's share of coef · x for one document (see BaselineModel.contributions)."""
    n_features = x.shape[1]
    total = np.zeros(n_features)
    total[x.indices] = x.data * coef[x.indices]
    occurrences = np.bincount(np.concatenate([uni[uni >= 0], pair[pair >= 0]]),
                              minlength=n_features)
    per = np.divide(total, occurrences, out=np.zeros(n_features), where=occurrences > 0)
    weight = np.where(uni >= 0, per[uni], 0.0)
    half = np.where(pair >= 0, per[pair], 0.0) / 2
    weight += half
    weight[1:] += half[:-1]
    return weight


def original_offsets(text: str, cleaned_length: int) -> np.ndarray:
    """For each character of clean(text), the index of the original character it came from.

    `clean` turns each `<br />` into one space and every other character into its lower case,
    whose length does not depend on context (only final sigma is contextual, and stays one).
    """
    offsets: list[int] = []
    start = 0
    for match in itertools.chain(BREAK.finditer(text), [None]):
        end = match.start() if match else len(text)
        if text[start:end].isascii():
            offsets.extend(range(start, end))
        else:
            for i in range(start, end):
                offsets.extend([i] * len(text[i].lower()))
        if match:
            offsets.append(match.start())
            start = match.end()
    if len(offsets) != cleaned_length:
        raise RuntimeError("trainer.baseline.cleaning.clean changed in a way original_offsets must follow")
    return np.array(offsets, dtype=np.int64)
