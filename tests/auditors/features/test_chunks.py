"""The one n-gram counting path (map per chunk, reduce in row order) equals scikit-learn's
`CountVectorizer(binary=True, min_df, max_features)` run per family over all rows at once,
down to the order scikit-learn stores each row's entries in, whatever the chunking; bounded
tables prune singletons only past their bound."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from auditors.features import ngrams as ng
from auditors.features.chunks import (NgramReducer, chunk_bounds, chunked_ngrams, count_chunk,
                                      embed_chunk)
from auditors.features.ngrams import count_ngrams


def sklearn_ngrams(texts, *, max_n=3, min_support=2, max_ngrams=200_000):
    """The oracle: one CountVectorizer per family over all the rows, families side by side."""
    min_df = min(min_support, max(len(texts), 1))
    options = {"binary": True, "dtype": np.int32, "min_df": min_df, "max_features": max_ngrams}
    families = [(None, CountVectorizer(**ng.word_vectorizer_options(max_n), **options))]
    families += [(analyzer, CountVectorizer(analyzer=analyzer, lowercase=False, **options))
                 for analyzer in ng.PSEUDO_TOKENS]
    matrices, vocabularies, zipf, order = [sp.csr_matrix((len(texts), 0), dtype=np.int32)], [], [], []
    for analyzer, vectorizer in families:
        try:
            matrices.append(vectorizer.fit_transform(texts).tocsr())
        except ValueError:  # no term reaches min_df
            continue
        vocabulary = vectorizer.get_feature_names_out().astype(object)
        vocabularies.append(vocabulary)
        if analyzer is None:
            zipf.append(ng.general_zipf(vocabulary, "en"))
            order.append([g.count(" ") + 1 for g in vocabulary])
        else:
            zipf.append(ng.pseudo_token_zipf(analyzer, vocabulary, "en"))
            order.append([1] * len(vocabulary))
    matrix = sp.hstack(matrices, format="csr")
    return ng.NgramStats(np.concatenate(vocabularies or [np.array([], dtype=object)]), matrix,
                         np.asarray(matrix.sum(axis=0)).ravel(),
                         np.concatenate(zipf or [np.zeros(0, dtype=np.float32)]),
                         np.concatenate(order or [[]]).astype(np.int32))


EXTRA = ["emoji 😀😀 here", "zero\u200bwidth cf", "mixed wоrd text here", "😀😀 again",
         "greatcf movie!!!", "", "a"]


def assert_same_stats(expected, got):
    assert list(got.vocabulary) == list(expected.vocabulary)
    assert got.rows_x_ngrams.shape == expected.rows_x_ngrams.shape
    for part in ("indptr", "indices", "data"):  # storage order too: detectors read rows in it
        np.testing.assert_array_equal(getattr(got.rows_x_ngrams, part),
                                      getattr(expected.rows_x_ngrams, part))
    np.testing.assert_array_equal(got.doc_freq, expected.doc_freq)
    np.testing.assert_array_equal(got.general_zipf, expected.general_zipf)
    np.testing.assert_array_equal(got.order, expected.order)


@pytest.fixture(scope="module")
def texts(sample_path):
    lines = sample_path.read_text(encoding="utf-8").splitlines()[1:1201]
    return [line.rsplit("\t", 1)[0] for line in lines] + EXTRA


@pytest.fixture(scope="module")
def reference(texts):
    return sklearn_ngrams(texts)


def test_count_ngrams_equals_scikit_learn(texts, reference):
    assert_same_stats(reference, count_ngrams(texts))


@pytest.mark.parametrize("chunk_rows", [10_000, 397, 1])
def test_chunked_counts_equal_count_ngrams(texts, reference, chunk_rows):
    assert_same_stats(reference, chunked_ngrams(texts, chunk_rows=chunk_rows))


def test_max_ngrams_keeps_the_same_most_frequent_terms(texts):
    assert_same_stats(sklearn_ngrams(texts, max_ngrams=300),
                      chunked_ngrams(texts, chunk_rows=250, max_ngrams=300))


@pytest.mark.parametrize("rows", [[], [""], ["", "a"], ["same words", "same words"]])
def test_degenerate_inputs(rows):
    assert_same_stats(sklearn_ngrams(rows), chunked_ngrams(rows, chunk_rows=1))


def test_chunks_can_be_reduced_in_any_grouping(texts, reference):
    reducer = NgramReducer()
    for start, stop in chunk_bounds(len(texts), 500):
        reducer.add(count_chunk(texts[start:stop]))
    assert reducer.pruned_terms == 0
    assert_same_stats(reference, reducer.finish())


def test_bounded_table_prunes_singletons_and_keeps_frequent_terms(texts, reference):
    bounded = chunked_ngrams(texts, chunk_rows=200, max_table=2_000)
    assert bounded.rows_x_ngrams.shape[0] == len(texts)
    kept = set(bounded.vocabulary)
    frequent = {g for g, df in zip(reference.vocabulary, reference.doc_freq) if df >= 50}
    assert frequent and frequent <= kept  # frequent terms survive the pruning
    counted = dict(zip(bounded.vocabulary, bounded.doc_freq))
    exact = dict(zip(reference.vocabulary, reference.doc_freq))
    assert all(counted[g] <= exact[g] for g in counted)  # pruning only undercounts


def test_chunk_bounds():
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_bounds(0, 3) == []
    with pytest.raises(ValueError):
        chunk_bounds(3, 0)


def test_embed_chunk_matches_whole_encode(encoder, texts):
    from auditors.features.embeddings import embed_texts

    whole = embed_texts(encoder, texts[:40])
    parts = np.concatenate([embed_chunk(texts[a:b], model=None, backend="torch")
                            for a, b in chunk_bounds(40, 16)])
    np.testing.assert_allclose(parts, whole, atol=1e-5)


def test_count_cache_reuses_unchanged_chunks(texts, reference, tmp_path):
    from auditors.features.chunks import NgramCountCache, cached_ngrams

    ids = [f"r{i}" for i in range(len(texts))]
    cold = NgramCountCache(tmp_path)
    assert_same_stats(reference, cached_ngrams(ids, texts, cold, chunk_rows=500))
    assert (cold.hits, cold.misses) == (0, 3)
    grown = texts + ["a new row cf", "another new row"]
    warm = NgramCountCache(tmp_path)
    got = cached_ngrams(ids + ["n1", "n2"], grown, warm, chunk_rows=500)
    assert (warm.hits, warm.misses) == (2, 1)  # only the last chunk changed
    assert_same_stats(count_ngrams(grown), got)
    for damaged in tmp_path.rglob("*.npz"):
        damaged.write_bytes(b"not an npz")
    again = NgramCountCache(tmp_path)
    assert_same_stats(reference, cached_ngrams(ids, texts, again, chunk_rows=500))
    assert again.misses == 3


def test_count_cache_key_follows_the_tokenisers_not_the_source(monkeypatch):
    from auditors.features.chunks import counting_fingerprint

    key = counting_fingerprint(3)
    assert counting_fingerprint(3) == key and counting_fingerprint(2) != key
    monkeypatch.setattr(ng, "TOKEN_PATTERN", r"(?u)\b\w\w+\b")  # scikit-learn's default
    assert counting_fingerprint(3) != key  # a changed tokeniser never reads stale counts
