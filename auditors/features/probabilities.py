"""Out-of-fold class probabilities from a linear classifier on embeddings: the input that
Cleanlab's label-issue methods and the trigger miner share."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict


def cross_validated_probs(features: np.ndarray, codes: np.ndarray, n_classes: int, *,
                          n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """pred_probs[i, c] = P(class c | row i) from a model that never saw row i."""
    smallest = np.bincount(codes, minlength=n_classes).min()
    n_folds = int(max(2, min(n_folds, smallest))) if smallest >= 2 else 2
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    model = LogisticRegression(max_iter=2000, C=1.0)
    probs = cross_val_predict(model, features, codes, cv=folds, method="predict_proba")
    # cross_val_predict orders columns by the classes seen; expand to all classes
    full = np.clip(expand_classes(probs, np.unique(codes), n_classes), 1e-6, 1.0)
    return full / full.sum(axis=1, keepdims=True)


def expand_classes(probs: np.ndarray, classes: np.ndarray, n_classes: int,
                   fill: float = 0.0) -> np.ndarray:
    """A column per class code 0..n_classes-1 from probabilities over `classes` only (a
    model's `classes_`): classes a model never saw get `fill`."""
    full = np.full((probs.shape[0], n_classes), fill, dtype=np.float64)
    full[:, classes] = probs
    return full
