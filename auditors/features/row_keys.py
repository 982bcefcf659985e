"""Randomness that follows the rows, not their positions. Cross-validation folds, refit
samples and k-means starts are drawn from each row's key (its `row_id`, a hash of the
normalised content) and the seed: the same rows give the same folds, samples and scores in
any input order. Copies of a row share a key, so they share a fold: a copy never vouches for
its twin out of fold."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd


def keys_or_positions(keys: Sequence | None, n: int) -> np.ndarray:
    """`keys` as an array, or each row's position where none are given (arrays without
    rows: folds then follow positions)."""
    return np.arange(n) if keys is None else np.asarray(keys)


def row_draws(keys: Sequence, seed: int = 0) -> np.ndarray:
    """A pseudo-random uint64 per row from its key and `seed` (pandas' keyed SipHash)."""
    text = np.asarray(keys).astype(str).astype(object)
    return pd.util.hash_array(text, hash_key=f"{seed % 10**16:016d}", categorize=True)


def keyed_order(keys: Sequence, seed: int = 0) -> np.ndarray:
    """Row positions in the order of their draws (copies, whose draws tie, by position)."""
    return np.lexsort((np.arange(len(keys)), row_draws(keys, seed)))


class KeyedFolds:
    """A scikit-learn splitter (`cv=` of `cross_val_predict`) whose folds are drawn from
    row keys: each distinct key is dealt to a fold in the order of its draw, within its
    class when `split` is given classes (stratified, as `StratifiedKFold(shuffle=True)`)."""

    def __init__(self, keys: Sequence, n_splits: int = 5, seed: int = 0):
        self.keys, self.n_splits, self.seed = keys, n_splits, seed

    def fold_of_rows(self, classes: np.ndarray | None = None) -> np.ndarray:
        keys = np.asarray(self.keys).astype(str)
        classes = np.zeros(len(keys), dtype=np.int64) if classes is None else np.asarray(classes)
        folds = np.empty(len(keys), dtype=np.int64)
        for value in np.unique(classes):
            rows = np.flatnonzero(classes == value)
            distinct, key_of_row = np.unique(keys[rows], return_inverse=True)
            rank = np.empty(len(distinct), dtype=np.int64)
            rank[np.argsort(row_draws(distinct, self.seed), kind="stable")] = np.arange(
                len(distinct))
            folds[rows] = rank[key_of_row] % self.n_splits
        return folds

    def split(self, X=None, y=None, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(training rows, held-out rows), both in keyed order: a model fitted on the same
        rows in the same order is the same model to the last bit, whatever the input order."""
        folds = self.fold_of_rows(y)
        order = keyed_order(self.keys, self.seed)
        for fold in np.unique(folds):  # a fold no distinct row was dealt to is skipped
            yield order[folds[order] != fold], order[folds[order] == fold]

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits
