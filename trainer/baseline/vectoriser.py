"""The TF-IDF vectoriser: tokens (Arrow), unigram and bigram counts, idf, vocabulary lookups."""
from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from sklearn.preprocessing import normalize

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default, so its TfidfVectorizer reproduces ours
TOKENS = re.compile(TOKEN_PATTERN)
_NOT_SIMPLE = r"[^0-9a-z' \t\n\r\x0b\x0c]"


@dataclass(frozen=True)
class Counts:
    """Raw term counts (documents × terms) and, per column, the word ids of the term."""

    matrix: sp.csr_matrix
    words: np.ndarray
    first: np.ndarray
    second: np.ndarray  # -1 for a unigram


def tokenize(cleaned: list[str]) -> tuple[pa.Array, np.ndarray]:
    """Every TOKEN_PATTERN match of the cleaned texts in one Arrow array, and each one's text.

    Texts of only [0-9a-z'] and ASCII blanks (most reviews) are split by Arrow, which is what
    the pattern does to them (runs of two or more word characters); the rest by the regex.
    A text's tokens stay contiguous and in order.
    """
    ascii_rows = np.flatnonzero(np.fromiter(map(str.isascii, cleaned), bool, len(cleaned)))
    texts = pa.array([cleaned[i] for i in ascii_rows], pa.large_string())
    simple = pc.invert(pc.match_substring_regex(texts, _NOT_SIMPLE)).to_numpy(zero_copy_only=False)
    parts = pc.ascii_split_whitespace(pc.replace_substring(texts.filter(simple), "'", " "))
    words = pc.list_flatten(parts)
    long = pc.greater_equal(pc.binary_length(words), 2)
    simple_rows = ascii_rows[simple]
    other_rows = np.setdiff1d(np.arange(len(cleaned)), simple_rows, assume_unique=True)
    parents = simple_rows[pc.list_parent_indices(parts).to_numpy()]
    others = [TOKENS.findall(cleaned[i]) for i in other_rows]
    lengths = np.fromiter(map(len, others), dtype=np.int64, count=len(others))
    # \w never matches a lone surrogate, so every token is valid UTF-8 for Arrow.
    other_words = pa.array(itertools.chain.from_iterable(others), pa.large_string())
    return (pa.concat_arrays([words.filter(long), other_words]),
            np.concatenate([parents[long.to_numpy(zero_copy_only=False)],
                            np.repeat(other_rows, lengths)]))


def count_terms(cleaned: list[str], min_df: int) -> Counts:
    """Unigram and bigram counts, keeping terms found in at least `min_df` documents."""
    flat, doc = tokenize(cleaned)
    encoded = pc.dictionary_encode(flat)
    codes = encoded.indices.to_numpy().astype(np.int64)
    words, n_words = encoded.dictionary.to_numpy(zero_copy_only=False), len(encoded.dictionary)
    pair = doc[1:] == doc[:-1]
    pair_codes, pair_keys = pd.factorize(codes[:-1][pair] * n_words + codes[1:][pair])
    rows = np.concatenate([doc, doc[1:][pair]])
    cols = np.concatenate([codes, pair_codes.astype(np.int64) + n_words])
    shape = (len(cleaned), n_words + len(pair_keys))
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    keep = np.flatnonzero(np.bincount(matrix.indices, minlength=shape[1]) >= min_df)
    first = np.concatenate([np.arange(n_words), pair_keys // max(n_words, 1)])[keep]
    second = np.concatenate([np.full(n_words, -1), pair_keys % max(n_words, 1)])[keep]
    return Counts(matrix[:, keep], words, first, second)


def document_frequency(counts: sp.csr_matrix) -> np.ndarray:
    return np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float64)


def smoothed_idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """scikit-learn's smoothed idf, computed the same way so the values match bit for bit."""
    return np.log((n_docs + 1) / (df + 1)) + 1


def tfidf(counts: sp.csr_matrix, idf: np.ndarray, sublinear: bool) -> sp.csr_matrix:
    """Tf (optionally 1 + log tf) × idf, rows scaled to unit L2 norm; zero idf drops a column."""
    out = counts.astype(np.float64, copy=True)
    if sublinear:
        out.data = np.log(out.data) + 1
    out.data *= idf[out.indices]
    out.eliminate_zeros()
    return normalize(out, copy=False) if out.shape[0] else out  # normalize rejects no rows


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
