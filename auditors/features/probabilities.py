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


class HeldOutProbabilities:
    """Class probabilities for a group of rows from a logistic regression fitted on the
    other rows of a fixed random sample of at most `max_rows` rows. The cap keeps each refit
    as cheap at a million rows as at `max_rows`: a linear model on sentence embeddings has
    long converged by then. (Warm-starting each refit from a model of all rows was measured
    and saves nothing: L-BFGS needs as many iterations to move off the shared optimum.)"""

    def __init__(self, features: np.ndarray, codes: np.ndarray, n_classes: int, *,
                 max_rows: int = 25_000, seed: int = 0):
        self.features, self.codes, self.n_classes = features, codes, n_classes
        n = len(codes)
        if n <= max_rows:
            self.sample = np.arange(n)
            return
        sample = np.random.default_rng(seed).choice(n, max_rows, replace=False)
        # a rare class is kept whole: a sample that missed its other rows would make a
        # group's class look private to the group (probability ~0, a false trigger)
        counts = np.bincount(codes, minlength=n_classes)
        rare = np.flatnonzero(np.isin(codes, np.flatnonzero(counts <= max_rows // 100)))
        self.sample = np.union1d(sample, rare)

    def probs(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n_classes) probabilities for `rows` from a model that never saw them.
        A class that only these rows carry gets ~0: nothing else in the data points to it.

        Leaving the rows out also shifts the class frequencies the model learns: 3 rows out
        of a 7-row class cut its share by 40%, and every row's probability of it with it. The
        outputs are moved back to the whole data's frequencies (Saerens, Latinne & Decaestecker
        2002: p(c|x) reweighted by prior(c) / training prior(c), both add-one smoothed), so
        that under the null, where the rows are a random sample, they are not biased low."""
        train = self.sample[~np.isin(self.sample, rows)]
        seen = np.unique(self.codes[train])
        if len(seen) == 0:
            return np.full((len(rows), self.n_classes), 1e-6)
        if len(seen) == 1:
            return expand_classes(np.ones((len(rows), 1)), seen, self.n_classes, fill=1e-6)
        model = LogisticRegression(max_iter=2000).fit(self.features[train], self.codes[train])
        probs = expand_classes(model.predict_proba(self.features[rows]), model.classes_,
                               self.n_classes, fill=1e-6)
        shifted = probs * (_smoothed_prior(self.codes, self.n_classes)
                           / _smoothed_prior(self.codes[train], self.n_classes))
        return shifted / shifted.sum(axis=1, keepdims=True)


def _smoothed_prior(codes: np.ndarray, n_classes: int) -> np.ndarray:
    return (np.bincount(codes, minlength=n_classes) + 1.0) / (len(codes) + n_classes)
