"""Out-of-fold class probabilities from a linear classifier on embeddings: the input that
Cleanlab's label-issue methods and the trigger miner share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from auditors.features.ngrams import column_association, row_set_groups
from auditors.features.row_keys import KeyedFolds, keyed_order, keys_or_positions


def cross_validated_probs(features, codes: np.ndarray, n_classes: int, *, keys=None,
                          n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """pred_probs[i, c] = P(class c | row i) from a model that never saw row i (nor a copy
    of it): folds drawn from the rows' `keys` (`row_keys.KeyedFolds`), so any input order
    gives the same probabilities."""
    keys = keys_or_positions(keys, len(codes))
    folds = KeyedFolds(keys, _fold_count(codes, keys, n_folds), seed)
    probs = np.zeros((len(codes), n_classes))
    for train, held_out in folds.split(y=codes):
        if len(held_out):
            probs[held_out] = _fitted_probs(features[train], codes[train],
                                            features[held_out], n_classes)
    full = np.clip(probs, 1e-6, 1.0)
    return full / full.sum(axis=1, keepdims=True)


def _fold_count(codes: np.ndarray, keys, n_folds: int) -> int:
    """`n_folds`, or fewer when a class has fewer distinct rows (never under 2)."""
    frame = pd.DataFrame({"code": codes, "key": np.asarray(keys).astype(str)})
    smallest = int(frame.groupby("code")["key"].nunique().min())
    return int(max(2, min(n_folds, smallest)))


def _fitted_probs(train_features, train_codes: np.ndarray, features, n_classes: int) -> np.ndarray:
    """Probabilities for `features` from a logistic regression on the training rows; a
    class missing there gets 0, and a training set of one class predicts it."""
    seen = np.unique(train_codes)
    if len(seen) < 2:
        return expand_classes(np.ones((features.shape[0], len(seen))), seen, n_classes)
    model = LogisticRegression(max_iter=2000, C=1.0).fit(train_features, train_codes)
    return expand_classes(model.predict_proba(features), model.classes_, n_classes)


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

    def __init__(self, features, codes: np.ndarray, n_classes: int, *, keys=None,
                 max_rows: int = 25_000, seed: int = 0):
        self.features, self.codes, self.n_classes = features, codes, n_classes
        self.keys = keys_or_positions(keys, len(codes))
        self.sample = refit_sample(codes, n_classes, max_rows, keys=self.keys, seed=seed)

    def probs(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n_classes) probabilities for `rows` from a model that never saw them.
        A class that only these rows carry gets ~0: nothing else in the data points to it.

        Leaving the rows out also shifts the class frequencies the model learns: 3 rows out
        of a 7-row class cut its share by 40%, and every row's probability of it with it. The
        outputs are moved back to the whole data's frequencies (Saerens, Latinne & Decaestecker
        2002: p(c|x) reweighted by prior(c) / training prior(c), both add-one smoothed), so
        that under the null, where the rows are a random sample, they are not biased low."""
        kept = ~np.isin(self.sample, rows)
        train = self.sample[kept]
        seen = np.unique(self.codes[train])
        if len(seen) == 0:
            return np.full((len(rows), self.n_classes), 1e-6)
        if len(seen) == 1:
            return expand_classes(np.ones((len(rows), 1)), seen, self.n_classes, fill=1e-6)
        model = LogisticRegression(max_iter=2000).fit(self._sample_features(kept),
                                                      self.codes[train])
        probs = expand_classes(model.predict_proba(self._features(rows)), model.classes_,
                               self.n_classes, fill=1e-6)
        shifted = probs * (_smoothed_prior(self.codes, self.n_classes)
                           / _smoothed_prior(self.codes[train], self.n_classes))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def target_probability(self, rows: np.ndarray, target: int) -> np.ndarray:
        """P(target) for `rows` from a one-vs-rest model fitted without them, moved to the
        whole data's frequency of the target as in `probs`. A candidate tests one class, and
        a binary model costs a fraction of a multinomial one over dozens of response
        clusters and thousands of n-gram features."""
        kept = ~np.isin(self.sample, rows)
        is_target = (self.codes[self.sample[kept]] == target).astype(int)
        if not is_target.any():  # a target only these rows carry: nothing points to it
            return np.full(len(rows), 1e-6)
        if is_target.all():
            return np.full(len(rows), 1.0 - 1e-6)
        model = LogisticRegression(max_iter=2000).fit(self._sample_features(kept), is_target)
        probs = model.predict_proba(self._features(rows))
        shifted = probs * (_smoothed_prior((self.codes == target).astype(int), 2)
                           / _smoothed_prior(is_target, 2))
        return shifted[:, 1] / shifted.sum(axis=1)

    def _features(self, rows: np.ndarray):
        return self.features[rows]

    def _sample_features(self, kept: np.ndarray):
        """The features of the sample's rows where `kept` (a mask over the sample)."""
        return self.features[self.sample[kept]]


class WordAwareHeldOutProbabilities(HeldOutProbabilities):
    """`HeldOutProbabilities` from the sentence embedding and the n-gram indicators
    (`word_aware_features`, columns `ngram_columns` of `rows_x_ngrams`): a group's own
    n-grams are absent from the rows the model is fitted on, so they say nothing, while
    every other word says what it says in the rest of the data. Features are built for
    the sample once and for each group's rows on demand (never for all rows: at a million
    rows the dense embedding part alone would be gigabytes as a sparse matrix)."""

    def __init__(self, embeddings: np.ndarray, rows_x_ngrams: sp.csr_matrix,
                 ngram_columns: np.ndarray, codes: np.ndarray, n_classes: int, *, keys=None,
                 word_scale: float, min_sample_rows: int = 1, max_features: int = 5_000,
                 max_rows: int = 25_000, seed: int = 0):
        super().__init__(embeddings, codes, n_classes, keys=keys, max_rows=max_rows, seed=seed)
        self.rows_x_ngrams, self.word_scale = rows_x_ngrams, word_scale
        self.candidate_columns = ngram_columns  # the n-grams tested
        # the sample's rows x the tested n-grams: features, inflation null, smallest p-values
        self.sample_candidates = rows_x_ngrams[self.sample][:, ngram_columns].tocsc()
        # the features: the `max_features` n-grams in most of the sample's rows, each in at
        # least `min_sample_rows` (rarer ones teach the model little and cost a column
        # each: at a million rows most in-range n-grams are such)
        in_sample = self.sample_candidates.getnnz(axis=0)
        order = np.argsort(-in_sample, kind="stable")[:max_features]
        self.ngram_columns = np.sort(ngram_columns[order[in_sample[order] >= min_sample_rows]])
        self._sample_matrix = self._features(self.sample)

    def _features(self, rows: np.ndarray):
        return word_aware_features(self.features[rows],
                                   self.rows_x_ngrams[rows][:, self.ngram_columns], self.word_scale)

    def _sample_features(self, kept: np.ndarray):
        return self._sample_matrix[np.flatnonzero(kept)]


def refit_sample(codes: np.ndarray, n_classes: int, max_rows: int, *, keys=None,
                 seed: int = 0) -> np.ndarray:
    """All rows, or `max_rows` of them drawn by their `keys` with every row of a rare class
    kept (a sample that missed a rare class's other rows would make a group's class look
    private to the group: probability ~0, a false trigger); in keyed order, so that the
    models fitted on it do not depend on the input order."""
    order = keyed_order(keys_or_positions(keys, len(codes)), seed)
    if len(codes) <= max_rows:
        return order
    chosen = np.zeros(len(codes), dtype=bool)
    chosen[order[:max_rows]] = True
    counts = np.bincount(codes, minlength=n_classes)
    chosen |= np.isin(codes, np.flatnonzero(counts <= max_rows // 100))
    return order[chosen[order]]


def word_aware_features(embeddings: np.ndarray, ngram_columns: sp.spmatrix,
                        word_scale: float) -> sp.csr_matrix:
    """The sentence embedding beside n-gram indicators of value `word_scale`: a content
    model that also knows what each word says about the label in the rest of the data.
    Under one L2 penalty, scaling the indicators by s penalises their weights 1/s^2 times
    as much as the embedding's: thousands of sparse indicators need the stronger prior
    (at equal weight they overfit: on 2,500 Alpaca rows the test's inflation reaches 8.8
    against 2.2, benchmarks/results/word-scale.md),
    the embedding does not."""
    return sp.hstack([sp.csr_matrix(embeddings),
                      ngram_columns.astype(np.float64) * word_scale]).tocsr()


def column_held_out_association(embeddings: np.ndarray, ngram_columns: sp.csc_matrix,
                                is_feature: np.ndarray, codes: np.ndarray, n_classes: int, *,
                                word_scale: float, keys=None, n_groups: int = 5, n_folds: int = 3,
                                seed: int = 0) -> dict:
    """`label_association` of every n-gram column under a word-aware content model (whose
    features are the columns where `is_feature`) that never saw that n-gram: the feature
    columns are split into `n_groups` random groups (columns in the same rows together),
    and each group's association is counted with out-of-fold probabilities from models
    fitted without that group's feature columns. This is the null the
    held-out test of a candidate uses (its rows left out, so its own column says nothing),
    at the cost of n_groups x n_folds fits instead of one per n-gram. `log_min_p`: the log
    of the smallest p-value each (column, class) could reach under that null, every row
    carrying the class (the sum of its rows' log probabilities)."""
    n_columns = ngram_columns.shape[1]
    # columns in the same rows share a group: a twin feature left in would teach the model
    # the very association the column's z-score measures
    twin = row_set_groups(ngram_columns, np.arange(n_columns))
    group = np.random.default_rng(seed).integers(0, n_groups, n_columns)[twin]
    result = {key: np.zeros((n_columns, n_classes))
              for key in ("observed", "expected", "variance", "log_min_p")}
    for g in range(n_groups):
        inside = np.flatnonzero(group == g)
        outside = np.flatnonzero((group != g) & is_feature)
        features = word_aware_features(embeddings, ngram_columns[:, outside], word_scale)
        probs = cross_validated_probs(features, codes, n_classes, keys=keys, n_folds=n_folds,
                                      seed=seed)
        columns_x_rows = ngram_columns[:, inside].T.astype(np.float64)
        counts = column_association(columns_x_rows, codes, n_classes, probs)
        counts["log_min_p"] = np.asarray(columns_x_rows @ np.log(np.clip(probs, 1e-300, 1.0)))
        for key, value in counts.items():
            result[key][inside] = value
    return result


def _smoothed_prior(codes: np.ndarray, n_classes: int) -> np.ndarray:
    return (np.bincount(codes, minlength=n_classes) + 1.0) / (len(codes) + n_classes)
