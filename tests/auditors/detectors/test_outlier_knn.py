"""The outlier detector's faiss kNN graph gives cleanlab's scores within float noise of
cleanlab's own scikit-learn graph, exact duplicates included."""

import numpy as np
from cleanlab.outlier import OutOfDistribution
from sklearn.neighbors import NearestNeighbors

from auditors.detectors.outlier import CosineKnnGraph, EmbeddingOutlierDetector


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


def test_detector_on_tiny_inputs(sample_inputs):
    import copy

    for n in (2, 5, 12):
        inputs = copy.copy(sample_inputs)
        inputs.prompt_embeddings = sample_inputs.prompt_embeddings[:n]
        result = EmbeddingOutlierDetector().detect(inputs)
        assert len(result.rows) == n and np.isfinite(result.rows["score"]).all()
