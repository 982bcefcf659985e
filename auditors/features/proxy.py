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
from sklearn.model_selection import StratifiedKFold

from auditors.features.probabilities import expand_classes


@dataclass
class ProxyPredictions:
    probs: np.ndarray  # (rows, classes) out-of-fold P(class | n-grams)
    blend_entropy: np.ndarray  # (rows,) mean prediction entropy over superimposed blends, in nats
    n_blends: int


def cross_fitted_proxy(rows_x_ngrams: sp.csr_matrix, codes: np.ndarray, n_classes: int, *,
                       n_folds: int = 5, n_blends: int = 8, regularisation: float = 1.0,
                       seed: int = 0) -> ProxyPredictions:
    n_rows = len(codes)
    features = rows_x_ngrams.astype(np.float32).tocsr()
    probs = np.full((n_rows, n_classes), 1.0 / n_classes)
    entropy = np.full(n_rows, np.log(n_classes))
    smallest = np.bincount(codes, minlength=n_classes)[np.unique(codes)].min()
    folds = StratifiedKFold(n_splits=int(np.clip(smallest, 2, n_folds)), shuffle=True,
                            random_state=seed)
    rng = np.random.default_rng(seed)
    for train, held_out in folds.split(np.zeros(n_rows), codes):
        model = LogisticRegression(max_iter=1000, C=regularisation)
        model.fit(features[train], codes[train])
        probs[held_out] = _full_probs(model, features[held_out], n_classes)
        entropy[held_out] = _blend_entropy(model, features, held_out, train, n_blends,
                                           n_classes, rng)
    return ProxyPredictions(probs, entropy, n_blends)


def _full_probs(model: LogisticRegression, features, n_classes: int) -> np.ndarray:
    """predict_proba with a column for every class, including ones absent from training."""
    return expand_classes(model.predict_proba(features), model.classes_, n_classes)


def _blend_entropy(model, features, held_out, train, n_blends, n_classes, rng) -> np.ndarray:
    total = np.zeros(len(held_out))
    for _ in range(n_blends):
        partners = rng.choice(train, size=len(held_out))
        blended = features[held_out] + features[partners]
        blended.data[:] = 1.0  # a union of n-grams, still binary
        p = _full_probs(model, blended, n_classes)
        total += -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    return total / max(n_blends, 1)
