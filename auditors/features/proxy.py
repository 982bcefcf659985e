"""A shortcut-prone proxy: logistic regression on the binary n-gram matrix, cross-fitted so
that every row is scored by a model that never saw it.

A rare trigger is exactly the kind of feature such a model latches onto, so the proxy fits
poisoned rows confidently where the embedding classifier (which reads meaning) does not.
While each fold's model is at hand it is also probed STRIP-style: every held-out row is
superimposed with random training rows (the union of their n-grams) and the entropy of
the predictions is averaged. A trigger keeps the prediction on its target whatever else
is blended in; an ordinary row's prediction drifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from auditors.features.probabilities import expand_classes
from auditors.features.row_keys import KeyedFolds, keyed_order, keys_or_positions, row_draws


@dataclass
class ProxyPredictions:
    probs: np.ndarray  # (rows, classes) out-of-fold P(class | n-grams)
    blend_entropy: np.ndarray  # (rows,) mean prediction entropy over superimposed blends, in nats
    n_blends: int


def cross_fitted_proxy(rows_x_ngrams: sp.csr_matrix, codes: np.ndarray, n_classes: int, *,
                       n_folds: int = 5, n_blends: int = 8, regularisation: float = 1.0,
                       keys=None, seed: int = 0) -> ProxyPredictions:
    """Out-of-fold probabilities and blend entropies; folds and blend partners are drawn
    from the rows' `keys` (`row_keys`), so they follow the rows in any input order."""
    n_rows = len(codes)
    features = rows_x_ngrams.astype(np.float32).tocsr()
    probs = np.full((n_rows, n_classes), 1.0 / n_classes)
    entropy = np.full(n_rows, np.log(n_classes))
    smallest = np.bincount(codes, minlength=n_classes)[np.unique(codes)].min()
    keys = keys_or_positions(keys, n_rows)
    folds = KeyedFolds(keys, int(np.clip(smallest, 2, n_folds)), seed)
    for train, held_out in folds.split(y=codes):
        if len(np.unique(codes[train])) < 2:  # copies of one row made a class's whole fold
            continue
        model = LogisticRegression(max_iter=1000, C=regularisation)
        model.fit(features[train], codes[train])
        probs[held_out] = _full_probs(model, features[held_out], n_classes)
        entropy[held_out] = _blend_entropy(model, features, held_out, train, n_blends,
                                           n_classes, keys, seed)
    return ProxyPredictions(probs, entropy, n_blends)


def _full_probs(model: LogisticRegression, features, n_classes: int) -> np.ndarray:
    """predict_proba with a column for every class, including ones absent from training."""
    return expand_classes(model.predict_proba(features), model.classes_, n_classes)


def _blend_entropy(model, features, held_out, train, n_blends, n_classes, keys,
                   seed: int) -> np.ndarray:
    """Mean prediction entropy of each held-out row blended with `n_blends` training rows,
    each partner drawn from the pair of keys (not positions)."""
    total = np.zeros(len(held_out))
    train = train[keyed_order(keys[train], seed)]
    for blend in range(n_blends):
        partners = train[row_draws(keys[held_out], seed + 1 + blend) % np.uint64(len(train))]
        blended = features[held_out] + features[partners]
        blended.data[:] = 1.0  # a union of n-grams, still binary
        p = _full_probs(model, blended, n_classes)
        total += -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    return total / max(n_blends, 1)
