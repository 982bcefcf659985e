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
from pathlib import Path

import numpy as np
from cleanlab.outlier import OutOfDistribution

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, register

EXACT_MAX_ROWS = 50_000  # above this the kNN graph is approximate (`approximate_knn`)


class CosineKnnGraph:
    """The k nearest other rows of every row by cosine distance, in the shape of a fitted
    scikit-learn `NearestNeighbors(metric="cosine")` queried with `kneighbors()` (the row
    itself excluded, as scikit-learn does; exact duplicates at distance 0 as cleanlab
    corrects them). One search; `kneighbors` returns the stored graph."""

    metric = "cosine"

    def __init__(self, features: np.ndarray, n_neighbors: int, **stored):
        self.n_neighbors = n_neighbors
        self._fit_X = features
        self.distances, self.indices = cosine_knn(features, n_neighbors, **stored)

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """The graph of the rows it was built on (each row's neighbours, itself excluded)."""
        if X is not None and X is not self._fit_X:
            raise ValueError("CosineKnnGraph only answers for the rows it was built on")
        return (self.distances, self.indices) if return_distance else self.indices


def cosine_knn(features: np.ndarray, k: int, *, row_ids=None, graph_file: Path | None = None,
               exact_max_rows: int = EXACT_MAX_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of each row's k nearest other rows, nearest first. With
    `graph_file` and `row_ids`, the graph of the previous audit stored there is extended
    instead of rebuilt when that audit's rows are all still here with the same vectors
    (`extend_graph`; the two latest graphs of other sources are tried too, for a new file
    that holds an old one's rows); the new graph is stored for the next audit. Above
    `exact_max_rows` rows the graph is approximate (`approximate_knn`)."""
    from cleanlab.internal.neighbor.knn_graph import correct_knn_distances_and_indices

    x = _unit(features)
    graph = None
    for candidate in _stored_graphs(graph_file, k) if graph_file is not None else []:
        graph = _load_graph(candidate, row_ids, x, k)
        if graph is not None:
            break
    if graph is not None:
        distances, indices = graph
    elif len(x) > exact_max_rows:
        distances, indices = approximate_knn(x, k)
    else:
        distances, indices = _search(x, x, k, exclude_self=True)
    if graph_file is not None:
        _save_graph(graph_file, row_ids, x, distances, indices)
    return correct_knn_distances_and_indices(features, distances.astype(np.float64), indices)


def _unit(features: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)  # cosine, as scikit-learn normalises


def _search(queries: np.ndarray, base: np.ndarray, k: int, *, exclude_self: bool,
            offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances and indices (into `base`, plus `offset`) of each query's k nearest
    rows of `base`. `exclude_self`: queries are `base` itself; a row is not its own
    neighbour (where exact duplicates hide it, the first neighbour goes, as in
    scikit-learn)."""
    extra = 1 if exclude_self else 0
    similarity, neighbours = _brute_force(queries, base, min(k + extra, len(base)))
    if exclude_self:
        similarity, neighbours = _drop_own(similarity, neighbours, np.arange(len(queries)))
    return _distances(similarity), neighbours.astype(np.int64) + offset


def _brute_force(queries: np.ndarray, base: np.ndarray, k: int):
    """Exact inner-product search without an index (no copy of `base`)."""
    import faiss

    return faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)


def _drop_own(similarity, neighbours, own_rows):
    """Each query's result without the query row itself (else without the last)."""
    own = neighbours == own_rows[:, None]
    own[~own.any(axis=1), -1] = True
    n = len(own_rows)
    return similarity[~own].reshape(n, -1), neighbours[~own].reshape(n, -1)


def _distances(similarity: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - similarity, 0.0, 2.0).astype(np.float32)


def approximate_knn(x: np.ndarray, k: int, *, nprobe: int = 4,
                    exact_top_fraction: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph of many rows from a faiss inverted-file index (k-means cells, the
    `nprobe` nearest cells searched), then made exact where the outlier ranking needs it.

    An approximate search can only miss neighbours, so a row's approximate mean distance is
    an upper bound of its exact one. Rows are re-searched exactly, most distant first, until
    every row left approximate has a bound below the exact score of the
    `exact_top_fraction`-th most distant re-searched row: then the rows whose exact score is
    in that top fraction all have exact neighbours, and only the order of the unremarkable
    rest is approximate. Costs about `nprobe / cells` of an exact search plus the re-search
    (at least `exact_top_fraction` of it). Rows the index could not fill are re-searched."""
    import faiss

    n = len(x)
    cells = max(1, int(2 * np.sqrt(n)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], cells,
                               faiss.METRIC_INNER_PRODUCT)
    index.cp.niter, index.cp.seed = 10, seed
    sample = np.random.default_rng(seed).choice(n, min(n, 40 * cells), replace=False)
    index.train(x[np.sort(sample)])
    index.add(x)
    index.nprobe = nprobe
    similarity, neighbours = index.search(x, k + 1)
    del index
    similarity, neighbours = _drop_own(similarity, neighbours, np.arange(n))
    distances, indices = _distances(similarity), neighbours.astype(np.int64)
    distances[indices < 0] = 2.0  # unfilled: as far as possible, so re-searched first
    bound = distances.mean(axis=1)
    order = np.argsort(-bound, kind="stable")
    top = max(1, int(np.ceil(exact_top_fraction * n)))
    done, exact_scores = 0, []
    while done < n:
        batch = order[done:min(n, max(2 * done, 2 * top))]
        d, i = _drop_own(*_brute_force(x[batch], x, k + 1), batch)
        distances[batch], indices[batch] = _distances(d), i.astype(np.int64)
        exact_scores.append(distances[batch].mean(axis=1))
        done += len(batch)
        kth_exact = np.sort(np.concatenate(exact_scores))[::-1][min(top, done) - 1]
        if done >= top and (done == n or bound[order[done]] < kth_exact):
            break
    return distances, indices


def extend_graph(x: np.ndarray, old: np.ndarray, distances: np.ndarray, indices: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k-NN graph of all rows of `x` from the graph of its rows `old` (positions in
    `x`; `indices` point into `old`): an old row's nearest rows are its old neighbours or
    among the new rows; a new row is searched against all. Exact (ties aside); costs
    new rows x all rows instead of all rows squared."""
    new = np.setdiff1d(np.arange(len(x)), old)
    out_d = np.empty((len(x), k), dtype=np.float32)
    out_i = np.empty((len(x), k), dtype=np.int64)
    old_d, old_i = distances, old[indices]
    if len(new):
        near_d, near_i = _search(x[old], x[new], k, exclude_self=False)
        both_d = np.concatenate([old_d, near_d], axis=1)
        both_i = np.concatenate([old_i, new[near_i]], axis=1)
        order = np.argsort(both_d, axis=1, kind="stable")[:, :k]
        old_d, old_i = np.take_along_axis(both_d, order, 1), np.take_along_axis(both_i, order, 1)
        all_d, all_i = _search(x[new], x, k + 1, exclude_self=False)
        keep = all_i != new[:, None]  # drop the row itself, else the farthest
        keep[keep.all(axis=1), -1] = False
        out_d[new] = all_d[keep].reshape(len(new), -1)[:, :k]
        out_i[new] = all_i[keep].reshape(len(new), -1)[:, :k]
    out_d[old], out_i[old] = old_d, old_i
    return out_d, out_i


def _stored_graphs(graph_file: Path, k: int) -> list[Path]:
    """This source's graph first, then the two latest of other sources (a new file that
    holds an old one's rows, such as a grown copy)."""
    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # removed meanwhile
            return 0.0

    others = [p for p in graph_file.parent.glob(f"*-k{k}.npz") if p != graph_file] \
        if graph_file.parent.is_dir() else []
    return [graph_file, *sorted(others, key=mtime, reverse=True)[:2]]


def _fingerprint(x: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()


def _load_graph(path: Path, row_ids, x: np.ndarray, k: int):
    """The previous audit's graph extended to these rows, or None when it cannot be used
    (missing, another k, a row gone, a vector changed)."""
    import pandas as pd

    try:
        with np.load(path, allow_pickle=False) as stored:
            old_ids, distances, indices = stored["row_ids"], stored["distances"], stored["indices"]
            digest = str(stored["fingerprint"])
    except (OSError, ValueError, KeyError):
        return None
    if distances.shape != (len(old_ids), k) or len(old_ids) > len(x) or not len(old_ids):
        return None
    position = pd.Index(_occurrence_keys(row_ids))
    old = position.get_indexer(old_ids.astype(object))
    if (old < 0).any() or _fingerprint(x[old]) != digest:
        return None
    return extend_graph(x, old, distances, indices, k)


def _occurrence_keys(row_ids) -> np.ndarray:
    """Unique keys: a row id with its occurrence number (`id#0`, `id#1` for a repeated
    row), so the k-th copy of a repeated row maps to the k-th copy (equal rows have equal
    vectors)."""
    import pandas as pd

    ids = pd.Series(np.asarray(row_ids, dtype=object))
    return (ids + "#" + ids.groupby(ids).cumcount().astype(str)).to_numpy(dtype=object)


def _save_graph(path: Path, row_ids, x: np.ndarray, distances, indices) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, row_ids=np.asarray(_occurrence_keys(row_ids), dtype=str), distances=distances,
             indices=indices, fingerprint=np.array(_fingerprint(x)))
    os.replace(tmp, path)


@register
class EmbeddingOutlierDetector(Detector):
    name = "outlier"
    description = "kNN distance of the prompt embedding to its neighbours (cleanlab OutOfDistribution)"
    requires = ("prompt_embeddings",)

    def __init__(self, k: int = 10, issue_quantile: float = 0.99, graph_dir: str | None = None,
                 exact_max_rows: int = EXACT_MAX_ROWS):
        """`graph_dir`: keep the kNN graph there (per dataset source) and extend it on the
        next audit of the same source when rows were only added (`extend_graph`). Above
        `exact_max_rows` rows the graph is approximate, exact for the most distant rows
        (`approximate_knn`)."""
        self.k = k
        self.issue_quantile = issue_quantile
        self.graph_dir = graph_dir
        self.exact_max_rows = exact_max_rows

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        features = inputs.prompt_embeddings
        k = int(min(self.k, max(1, len(features) - 1)))
        if len(features) > k:
            graph = CosineKnnGraph(features, k, exact_max_rows=self.exact_max_rows,
                                   **self._stored(inputs))
            ood = OutOfDistribution(params={"knn": graph})
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

    def _stored(self, inputs: AuditInputs) -> dict:
        if not self.graph_dir:
            return {}
        import hashlib

        table = inputs.table
        source = str(table["source"].iloc[0]) if "source" in table and len(table) else ""
        name = hashlib.sha1(source.encode("utf-8")).hexdigest()[:16]
        return {"row_ids": table["row_id"].to_numpy(),
                "graph_file": Path(self.graph_dir) / f"{name}-k{self.k}.npz"}
