"""The outlier detector's faiss kNN graph gives cleanlab's scores within float noise of
cleanlab's own scikit-learn graph, exact duplicates included."""

import numpy as np
from cleanlab.outlier import OutOfDistribution
from sklearn.neighbors import NearestNeighbors

from auditors.detectors.outlier import EmbeddingOutlierDetector
from auditors.features.knn import CosineKnnGraph


def test_scores_equal_cleanlab_default(sample_inputs):
    features = np.concatenate([sample_inputs.prompt_embeddings,
                               sample_inputs.prompt_embeddings[:30]])  # exact duplicates
    reference = OutOfDistribution(params={"k": 10}).fit_score(features=features, verbose=False)
    graph = CosineKnnGraph(features, 10)
    ours = OutOfDistribution(params={"knn": graph}).fit_score(features=features, verbose=False)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    sk = NearestNeighbors(n_neighbors=10, metric="cosine").fit(features).kneighbors()
    np.testing.assert_allclose(np.sort(graph.distances, axis=1)[30:],
                               np.sort(sk[0], axis=1)[30:], atol=1e-5)
    same = [len(set(a) & set(b)) >= 9 for a, b in zip(graph.indices[30:], sk[1][30:])]
    assert np.mean(same) > 0.99


def test_approximate_graph_is_exact_for_the_most_distant_rows(sample_inputs, monkeypatch):
    """Above `exact_max_rows` the graph comes from an inverted-file index; the 1% most
    outlying rows still get their exact neighbours, so the detector flags the same rows,
    and elsewhere a missed neighbour can only make a row look farther."""
    import copy

    from auditors.features import knn as outlier
    from auditors.features.knn import _unit, approximate_knn, exact_knn

    monkeypatch.setattr(outlier, "IVF_MIN_ROWS", 100)  # the sample is small: index it anyway
    x = _unit(sample_inputs.prompt_embeddings)
    exact_d, exact_i, _ = exact_knn(x, 10)
    approx_d, approx_i, exact = approximate_knn(x, 10, nprobe=1)  # one cell: many misses
    exact_score, approx_score = exact_d.mean(axis=1), approx_d.mean(axis=1)
    top = int(np.ceil(0.01 * len(x)))
    assert set(np.argsort(-approx_score)[:top]) == set(np.argsort(-exact_score)[:top])
    assert (approx_score >= exact_score - 1e-5).all()
    assert (approx_score > exact_score + 1e-3).any()  # it is approximate elsewhere
    assert ((approx_i >= 0) & (approx_i < len(x)) & (approx_i != np.arange(len(x))[:, None])).all()
    np.testing.assert_allclose(approx_d[exact], exact_d[exact], atol=1e-5)
    assert exact.sum() >= top

    flagged = {}
    for name, limit in (("exact", 10**9), ("approximate", 100)):
        inputs = copy.copy(sample_inputs)
        inputs.knn_graph = outlier.prompt_graph(inputs.prompt_embeddings, exact_max_rows=limit)
        result = EmbeddingOutlierDetector().detect(inputs)
        flagged[name] = set(np.flatnonzero(result.rows["is_issue"]))
    assert flagged["approximate"] == flagged["exact"] and flagged["exact"]


def test_exact_duplicate_sets_equal_cleanlabs(sample_inputs, monkeypatch):
    from cleanlab.internal.neighbor.knn_graph import _compute_exact_duplicate_sets

    from auditors.features.knn import exact_duplicate_sets

    x = sample_inputs.prompt_embeddings
    features = np.concatenate([x[:40], x[:40], x[5:10], x[40:300]])[::-1]  # pairs, triples
    ours, theirs = exact_duplicate_sets(features), _compute_exact_duplicate_sets(features)
    assert len(ours) == 40
    assert sorted(map(list, ours)) == sorted(map(list, theirs))
    assert exact_duplicate_sets(x[40:300]) == []
    narrow = np.round(features[:, :3], 1) + 0.0  # 12-byte rows, many equal (+0.0: no -0.0)
    assert sorted(map(list, exact_duplicate_sets(narrow))) == \
        sorted(map(list, _compute_exact_duplicate_sets(narrow)))
    from auditors.features import knn as outlier

    # every row's hash colliding: the groups are still split by the rows' bytes
    monkeypatch.setattr(outlier, "_row_hashes", lambda rows: np.zeros(len(rows), np.uint64))
    assert sorted(map(list, exact_duplicate_sets(features))) == sorted(map(list, theirs))


def test_approximate_graph_is_extended_approximately(sample_inputs, tmp_path, monkeypatch):
    """Above `exact_max_rows` a stored graph is extended with inverted-file searches: the
    1% most distant rows of the grown data still have exact neighbours, a missed neighbour
    can only make a row look farther, and the rows marked exact are."""
    from auditors.features.knn import _unit, cosine_knn, exact_knn, extend_graph
    from auditors.features import knn as outlier
    from auditors.features.knn import approximate_knn

    monkeypatch.setattr(outlier, "IVF_MIN_ROWS", 100)  # index the sample, not the 60 new rows
    x = _unit(sample_inputs.prompt_embeddings)
    order = np.random.default_rng(1).permutation(len(x))
    old = np.sort(order[: len(x) - 60])  # the first audit; 60 rows come later
    stored = approximate_knn(x[old], 10, nprobe=1)
    grown = extend_graph(x, old, stored, approximate=True, nprobe=1)
    exact_d, _, _ = exact_knn(x, 10)
    exact_score, approx_score = exact_d.mean(axis=1), grown.distances.mean(axis=1)
    top = int(np.ceil(0.01 * len(x)))
    assert set(np.argsort(-approx_score)[:top]) == set(np.argsort(-exact_score)[:top])
    assert (approx_score >= exact_score - 1e-5).all()
    assert (approx_score > exact_score + 1e-3).any()  # approximate elsewhere
    np.testing.assert_allclose(grown.distances[grown.exact], exact_d[grown.exact], atol=1e-5)
    assert ((grown.indices >= 0) & (grown.indices != np.arange(len(x))[:, None])).all()

    ids = np.array([f"r{i}" for i in range(len(x))])
    graph = tmp_path / "graph.npz"
    cosine_knn(x[old], 10, row_ids=ids[old], graph_file=graph, exact_max_rows=100)
    through_file = cosine_knn(x, 10, row_ids=ids, graph_file=graph, exact_max_rows=100)
    file_score = through_file[0].mean(axis=1)
    assert set(np.argsort(-file_score)[:top]) == set(np.argsort(-exact_score)[:top])
    # an approximate graph is rebuilt, not extended, when the data becomes small enough
    exact_again = cosine_knn(x, 10, row_ids=ids, graph_file=graph)
    np.testing.assert_allclose(exact_again[0], cosine_knn(x, 10)[0], atol=1e-6)


def test_detector_on_tiny_inputs(sample_inputs):
    import copy

    from auditors.features.knn import prompt_graph

    for n in (2, 5, 12):
        inputs = copy.copy(sample_inputs)
        inputs.prompt_embeddings = sample_inputs.prompt_embeddings[:n]
        inputs.knn_graph = prompt_graph(inputs.prompt_embeddings)
        result = EmbeddingOutlierDetector().detect(inputs)
        assert len(result.rows) == n and np.isfinite(result.rows["score"]).all()


def test_stored_graph_is_extended_exactly(sample_inputs, tmp_path):
    from auditors.features.knn import cosine_knn

    x = np.concatenate([sample_inputs.prompt_embeddings, sample_inputs.prompt_embeddings[:5]])
    ids = np.array([f"r{i}" for i in range(len(sample_inputs.prompt_embeddings))] +
                   [f"r{i}" for i in range(5)])  # repeated rows keep their row id
    graph = tmp_path / "graph.npz"
    first = np.r_[0:2900, 3000:3003]  # the first audit: some rows and repeats
    cosine_knn(x[first], 10, row_ids=ids[first], graph_file=graph)
    order = np.random.default_rng(0).permutation(len(x))  # +100 rows, another order
    from auditors.features import knn as outlier

    assert outlier._load_graph(graph, ids[order], outlier._unit(x[order]), 10) is not None
    extended = cosine_knn(x[order], 10, row_ids=ids[order], graph_file=graph)
    fresh = cosine_knn(x[order], 10)
    np.testing.assert_allclose(extended[0], fresh[0], atol=1e-5)
    changed = x.copy()
    changed[5] = changed[6]  # a stored row's vector changed: the graph is rebuilt
    rebuilt = cosine_knn(changed, 10, row_ids=ids, graph_file=graph)
    np.testing.assert_allclose(rebuilt[0], cosine_knn(changed, 10)[0], atol=1e-6)


def test_pipeline_reaudit_reuses_graph_and_counts(sample_path, encoder, tmp_path):
    import pandas as pd

    from auditors import pipeline
    from auditors.config import AuditConfig

    lines = sample_path.read_text(encoding="utf-8").splitlines(keepends=True)
    small, grown = tmp_path / "small.tsv", tmp_path / "grown.tsv"
    small.write_text("".join(lines[:301]), encoding="utf-8")
    grown.write_text("".join(lines[:311]), encoding="utf-8")  # +10 rows
    cache = tmp_path / "cache"
    pipeline.audit(str(small), None, AuditConfig(backend="torch", cache_dir=cache), encoder=encoder)
    graphs = list((cache / "knn-graphs").rglob("*.npz"))
    assert len(graphs) == 1 and list((cache / "ngram-counts").rglob("*.npz"))
    first = pipeline.audit(str(grown), None, AuditConfig(backend="torch", cache_dir=cache), encoder=encoder)  # extends
    assert len(list((cache / "knn-graphs").rglob("*.npz"))) == 2
    again = pipeline.audit(str(grown), None, AuditConfig(backend="torch", cache_dir=cache), encoder=encoder)
    plain = pipeline.audit(str(grown), None, AuditConfig(backend="torch"), encoder=encoder)
    scores = [c for c in plain.rows.columns if c.endswith("score")]
    for result in (first, again):
        np.testing.assert_allclose(result.rows[scores], plain.rows[scores], atol=1e-5)
        pd.testing.assert_series_equal(result.rows["flagged"], plain.rows["flagged"])
        assert [t["pattern"] for t in result.triggers] == [t["pattern"] for t in plain.triggers]
