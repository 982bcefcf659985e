import numpy as np
from sklearn.linear_model import LogisticRegression

from auditors.features.probabilities import HeldOutProbabilities, cross_validated_probs


def _blobs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2, size=n)
    features = rng.normal(size=(n, 8)) + codes[:, None] * 0.8
    return features, codes


def test_held_out_probabilities_give_a_private_class_zero():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 5))
    codes = np.array([0] * 20 + [1] * 15 + [2] * 5)
    probs = HeldOutProbabilities(features, codes, 3).probs(np.arange(35, 40))
    assert probs.shape == (5, 3) and (probs[:, 2] < 1e-3).all()
    np.testing.assert_allclose(probs[:, :2].sum(axis=1), 1.0, atol=1e-4)


def test_refits_use_a_bounded_sample_that_never_holds_the_group():
    features, codes = _blobs(1_000)
    held_out = HeldOutProbabilities(features, codes, 2, max_rows=200)
    assert len(held_out.sample) == 200 and len(np.unique(held_out.sample)) == 200
    rows = held_out.sample[:50]  # rows inside the sample are left out of the refit
    train = np.setdiff1d(held_out.sample, rows)
    cold = LogisticRegression(max_iter=2000).fit(features[train], codes[train])
    # moved from the refit's class frequencies to the whole data's (add-one smoothed)
    shift = ((np.bincount(codes, minlength=2) + 1) / (len(codes) + 2)
             / ((np.bincount(codes[train], minlength=2) + 1) / (len(train) + 2)))
    expected = cold.predict_proba(features[rows]) * shift
    np.testing.assert_allclose(held_out.probs(rows), expected / expected.sum(axis=1, keepdims=True),
                               atol=2e-3)


def test_leaving_rows_out_does_not_bias_their_class_probability_low():
    """Rows left out of a small class lower its share in the refit; the shift restores it:
    on features that say nothing, the left-out rows get the whole data's share (2%), not
    the refit's (8 of 694, 1.2%)."""
    features = np.zeros((700, 3))
    codes = np.zeros(700, dtype=int)
    codes[:14] = 1
    rows = np.arange(6)
    train = np.arange(6, 700)
    raw = LogisticRegression(max_iter=2000).fit(features[train], codes[train])
    assert abs(raw.predict_proba(features[rows])[:, 1].mean() - 8 / 694) < 1e-3
    shifted = HeldOutProbabilities(features, codes, 2).probs(rows)[:, 1]
    assert abs(shifted.mean() - 14 / 700) < 1e-3


def test_out_of_fold_probabilities_cover_classes_a_fold_lacks():
    features, codes = _blobs(60)
    codes[:2] = 2  # a class too rare for every fold to see
    probs = cross_validated_probs(features, codes, 3)
    assert probs.shape == (60, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_a_rare_class_is_never_sampled_away():
    """With 5,000 rows capped at 1,000, the 6 rows of a rare class (at most 1% of the cap)
    are all kept, so leaving out 3 of them still leaves the class seen elsewhere."""
    features, codes = _blobs(5_000)
    codes[[5, 50, 500, 600, 700, 900]] = 2
    held_out = HeldOutProbabilities(features, codes, 3, max_rows=1_000)
    assert {5, 50, 500, 600, 700, 900} <= set(held_out.sample.tolist())
    # seen elsewhere: far above the 1e-6 of a class no other row carries (the whole data's
    # share of it, 6 in 5,000, is below the sample's, which keeps the rare class whole)
    assert held_out.probs(np.array([5, 50, 500]))[:, 2].max() > 1e-4


def _words(n_rows: int, n_words: int, rate: float, seed: int = 0):
    """A random binary rows x n-grams matrix (CSR) and random 8-d embeddings."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    matrix = sp.random(n_rows, n_words, density=rate, format="csr", random_state=seed)
    matrix.data[:] = 1.0
    return rng.normal(size=(n_rows, 8)), matrix


def test_word_aware_refits_know_the_other_words_but_not_the_groups_own():
    """Word 0 marks class 1 in the rest of the data; word 1 is the group's own n-gram. The
    group's rows that also hold word 0 get class 1 from the word-aware model (the
    embedding-only one, on embeddings that say nothing, cannot tell); word 1, absent from
    every row the refit saw, moves nothing: dropping its column changes no probability."""
    from auditors.features.probabilities import WordAwareHeldOutProbabilities

    embeddings, matrix = _words(600, 40, 0.02)
    matrix = matrix.tolil()
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2, size=600)
    marked = rng.choice(600, 150, replace=False)
    matrix[marked, 0], codes[marked] = 1.0, 1
    group = np.flatnonzero(matrix[:, 0].toarray().ravel() == 0)[:20]
    matrix[:, 1] = 0.0
    matrix[group, 1] = 1.0  # the group is exactly the rows holding word 1
    matrix[group[:10], 0] = 1.0  # half the group also holds the class-1 word
    matrix = matrix.tocsr()
    words = WordAwareHeldOutProbabilities(embeddings, matrix, np.arange(40), codes, 2,
                                          word_scale=1.0)
    probs = words.probs(group)[:, 1]
    plain = HeldOutProbabilities(embeddings, codes, 2).probs(group)[:, 1]
    assert probs[:10].mean() > plain[:10].mean() + 0.15
    without_own = WordAwareHeldOutProbabilities(embeddings, matrix, np.r_[0, 2:40], codes, 2,
                                                word_scale=1.0)
    np.testing.assert_allclose(without_own.probs(group)[:, 1], probs, atol=1e-3)


def test_column_held_out_association_is_calibrated_when_words_say_nothing():
    """Labels independent of words and embeddings: each n-gram's z-score under models that
    never saw it is N(0, 1), so the genomic-control inflation stays near 1."""
    from auditors.detectors.stats import genomic_inflation
    from auditors.features.probabilities import column_held_out_association

    embeddings, matrix = _words(3_000, 400, 0.01, seed=2)
    codes = np.random.default_rng(3).integers(0, 2, size=3_000)
    association = column_held_out_association(embeddings, matrix.tocsc(), np.ones(400, bool),
                                              codes, 2, word_scale=0.3)
    z = (association["observed"] - association["expected"]) / np.sqrt(association["variance"])
    assert np.all(association["observed"].sum(axis=1) == np.asarray(matrix.sum(axis=0)).ravel())
    assert genomic_inflation(z.ravel(), association["variance"].ravel()) < 1.2


def test_column_held_out_log_min_p_sums_the_held_out_log_probabilities():
    """`log_min_p`: each (column, class)'s smallest attainable p-value under the null, the
    sum of its rows' log probabilities, from the model that never saw the column (with no
    feature column, the embedding's out-of-fold model, for every column)."""
    from auditors.features.probabilities import (column_held_out_association,
                                                 word_aware_features)

    embeddings, matrix = _words(600, 30, 0.05, seed=6)
    codes = (embeddings[:, 0] > 0).astype(int)
    no_features = np.zeros(30, bool)
    association = column_held_out_association(embeddings, matrix.tocsc(), no_features, codes,
                                              2, word_scale=0.3, n_folds=3)
    probs = cross_validated_probs(word_aware_features(embeddings, matrix[:, []], 0.3), codes, 2,
                                  n_folds=3)
    expected = np.asarray(matrix.T @ np.log(probs))
    np.testing.assert_allclose(association["log_min_p"], expected, rtol=1e-9)
    assert (association["log_min_p"] < 0).all()


def test_word_aware_model_keeps_the_ngrams_its_sample_can_learn_from():
    """Above `max_rows` the refits see a sample; an n-gram in fewer than `min_sample_rows`
    of its rows is left out of the features (at a million rows, most in-range n-grams)."""
    from auditors.features.probabilities import WordAwareHeldOutProbabilities

    embeddings, matrix = _words(2_000, 300, 0.005, seed=4)
    codes = np.random.default_rng(5).integers(0, 2, size=2_000)
    words = WordAwareHeldOutProbabilities(embeddings, matrix, np.arange(300), codes, 2,
                                          word_scale=0.3, min_sample_rows=3, max_rows=400)
    in_sample = matrix[words.sample].getnnz(axis=0)
    assert np.array_equal(words.ngram_columns, np.flatnonzero(in_sample >= 3))
    assert 0 < len(words.ngram_columns) < 300
    probs = words.probs(np.arange(10))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_a_twin_column_does_not_hide_a_columns_association():
    """Two n-grams in exactly the same rows share a held-out group: with the twin left in
    as a feature, the model would learn the association the column's z-score measures."""
    import scipy.sparse as sp

    from auditors.features.probabilities import column_held_out_association

    embeddings, matrix = _words(1_500, 60, 0.02, seed=7)
    codes = np.random.default_rng(8).integers(0, 2, size=1_500)
    marked = np.flatnonzero(codes == 1)[:40]
    trigger = sp.csr_matrix((np.ones(40), (marked, np.zeros(40, int))), shape=(1_500, 1))
    columns = sp.hstack([matrix] + [trigger] * 6).tocsc()  # the trigger and five twins
    association = column_held_out_association(embeddings, columns, np.ones(66, bool), codes, 2,
                                              word_scale=1.0)
    z = ((association["observed"] - association["expected"])
         / np.sqrt(association["variance"]))[60:, 1]
    assert (z > 4).all()
