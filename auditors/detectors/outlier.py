"""Embedding outliers (cleanlab's kNN out-of-distribution score): rows unlike the rest of
the dataset, such as text rewritten by an attacker's template or style.

The neighbours are found by faiss (exact inner-product search on the unit-length
embeddings, cosine distance = 1 - inner product) rather than by the scikit-learn
`NearestNeighbors(metric="cosine")` cleanlab builds by default: same neighbours and
distances up to float32 noise, about 3-4x faster (faiss keeps a top-k heap per row instead of
materialising and partitioning every row of the distance matrix). Cleanlab still scores the
graph: the neighbours are handed to `OutOfDistribution` as a fitted kNN object."""

from __future__ import annotations

import warnings

import numpy as np
from cleanlab.outlier import OutOfDistribution

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, register


class CosineKnnGraph:
    """The k nearest other rows of every row by cosine distance, in the shape of a fitted
    scikit-learn `NearestNeighbors(metric="cosine")` queried with `kneighbors()` (the row
    itself excluded, as scikit-learn does; exact duplicates at distance 0 as cleanlab
    corrects them). One search; `kneighbors` returns the stored graph."""

    metric = "cosine"

    def __init__(self, features: np.ndarray, n_neighbors: int):
        self.n_neighbors = n_neighbors
        self._fit_X = features
        self.distances, self.indices = cosine_knn(features, n_neighbors)

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """The graph of the rows it was built on (each row's neighbours, itself excluded)."""
        if X is not None and X is not self._fit_X:
            raise ValueError("CosineKnnGraph only answers for the rows it was built on")
        return (self.distances, self.indices) if return_distance else self.indices


def cosine_knn(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of each row's k nearest other rows, nearest first."""
    import faiss
    from cleanlab.internal.neighbor.knn_graph import correct_knn_distances_and_indices

    x = np.ascontiguousarray(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)  # cosine, as scikit-learn normalises
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    similarity, neighbours = index.search(x, k + 1)
    # Drop the row itself; where exact duplicates hide it, drop the first (as scikit-learn)
    own = neighbours == np.arange(len(x))[:, None]
    own[~own.any(axis=1), -1] = True
    keep = ~own
    distances = np.clip(1.0 - similarity[keep].reshape(len(x), k), 0.0, 2.0).astype(np.float64)
    indices = neighbours[keep].reshape(len(x), k).astype(np.int64)
    return correct_knn_distances_and_indices(features, distances, indices)


@register
class EmbeddingOutlierDetector(Detector):
    name = "outlier"
    description = "kNN distance of the prompt embedding to its neighbours (cleanlab OutOfDistribution)"
    requires = ("prompt_embeddings",)

    def __init__(self, k: int = 10, issue_quantile: float = 0.99):
        self.k = k
        self.issue_quantile = issue_quantile

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        features = inputs.prompt_embeddings
        k = int(min(self.k, max(1, len(features) - 1)))
        if len(features) > k:
            ood = OutOfDistribution(params={"knn": CosineKnnGraph(features, k)})
            with warnings.catch_warnings():  # "already been fit": it is, on these rows
                warnings.filterwarnings("ignore", "A KNN estimator has previously")
                raw = ood.fit_score(features=features, verbose=False)
        else:  # too few rows for a graph: cleanlab's own handling
            raw = OutOfDistribution(params={"k": k}).fit_score(features=features, verbose=False)
        scores = 1.0 - raw  # cleanlab: lower = more outlying
        threshold = float(np.quantile(scores, self.issue_quantile)) if len(scores) else 1.0
        is_issue = scores > threshold
        reasons = [f"far from other rows (outlier score {s:.2f})" if f else ""
                   for s, f in zip(scores, is_issue)]
        return self.result(scores, is_issue, reasons, info={"k": k, "threshold": threshold})
