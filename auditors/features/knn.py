"""The kNN graph of the prompt embeddings: each row's nearest other rows by cosine distance,
computed once per audit (like cleanlab's Datalab, which shares one `knn_graph` between its
issue managers) and kept in the cache between audits of the same source.

The neighbours are found by faiss (exact inner-product search on the unit-length
embeddings, cosine distance = 1 - inner product) rather than by the scikit-learn
`NearestNeighbors(metric="cosine")` cleanlab builds by default: same neighbours and
distances up to float32 noise, about 3-4x faster (faiss keeps a top-k heap per row instead of
materialising and partitioning every row of the distance matrix)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from auditors.features.row_keys import keyed_order, keys_or_positions

EXACT_MAX_ROWS = 50_000  # above this the kNN graph is approximate (`approximate_knn`)
IVF_MIN_ROWS = 10_000  # below this an inverted-file index is not worth building


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


class KnnGraph(NamedTuple):
    """Each row's k nearest other rows (cosine distance, nearest first) and whether that
    row's neighbours are exact (an approximate search can only miss neighbours)."""

    distances: np.ndarray  # (n, k) float32
    indices: np.ndarray  # (n, k) int64
    exact: np.ndarray  # (n,) bool


def cosine_knn(features: np.ndarray, k: int, *, row_ids=None, graph_file: Path | None = None,
               exact_max_rows: int = EXACT_MAX_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of each row's k nearest other rows, nearest first. With
    `graph_file` and `row_ids`, the graph of the previous audit stored there is extended
    instead of rebuilt when that audit's rows are all still here with the same vectors
    (`extend_graph`; the two latest graphs of other sources are tried too, for a new file
    that holds an old one's rows); the new graph is stored for the next audit. Above
    `exact_max_rows` rows the graph, and its extension, are approximate except for the most
    distant rows (`approximate_knn`)."""
    from cleanlab.internal.neighbor.knn_graph import correct_knn_distances_and_indices

    x = _unit(features)
    approximate = len(x) > exact_max_rows
    graph = None
    for candidate in _stored_graphs(graph_file, k) if graph_file is not None else []:
        graph = _load_graph(candidate, row_ids, x, k, approximate=approximate)
        if graph is not None:
            break
    if graph is None:
        graph = approximate_knn(x, k, keys=row_ids) if approximate else exact_knn(x, k)
    if graph_file is not None:
        _save_graph(graph_file, row_ids, x, graph)
    return correct_knn_distances_and_indices(features, graph.distances.astype(np.float64),
                                             graph.indices,
                                             exact_duplicate_sets=exact_duplicate_sets(features))


def exact_duplicate_sets(features: np.ndarray, block: int = 65_536) -> list[np.ndarray]:
    """The rows of each group of identical vectors (two or more, ascending), as cleanlab's
    `_compute_exact_duplicate_sets` finds them: that scans all rows once per group, which
    grows as rows x groups (minutes at a million rows of repeated text) and sorts a copy of
    all vectors. Here rows are grouped by a hash of their bytes and each row is compared
    with the first of its group, a block at a time (so -0.0 and 0.0 differ, which
    embeddings do not produce); a group that a hash collision mixed is split exactly."""
    x = np.ascontiguousarray(features)
    _, inverse, counts = np.unique(_row_hashes(x), return_inverse=True, return_counts=True)
    candidates = np.flatnonzero(counts[inverse] > 1)  # every member of a group of equals
    if not len(candidates):
        return []
    candidates = candidates[np.argsort(inverse[candidates], kind="stable")]
    starts = np.flatnonzero(np.diff(inverse[candidates], prepend=-1))
    first = np.repeat(candidates[starts], np.diff(np.append(starts, len(candidates))))
    rows = x.view(np.uint8).reshape(len(x), -1)
    equal = np.concatenate([(rows[candidates[i:i + block]] == rows[first[i:i + block]]).all(axis=1)
                            for i in range(0, len(candidates), block)])
    groups = []
    for group, same in zip(np.split(candidates, starts[1:]), np.split(equal, starts[1:])):
        groups += [group] if same.all() else _equal_rows(rows[group], group)
    return [group for group in groups if len(group) > 1]


def _equal_rows(rows: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
    """`positions` grouped by identical `rows` (bytes)."""
    keys = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(positions[order], np.flatnonzero(np.diff(inverse[order])) + 1)


def _row_hashes(x: np.ndarray, block: int = 65_536) -> np.ndarray:
    """A 64-bit hash of each row's bytes (equal rows, equal hashes), a block at a time."""
    words = x.view(np.uint8).reshape(len(x), -1)
    pad = (-words.shape[1]) % 8
    weights = np.random.default_rng(0).integers(1, 2**63, (words.shape[1] + pad) // 8,
                                                dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(len(x), dtype=np.uint64)
    for start in range(0, len(x), block):
        part = words[start:start + block]
        if pad:
            part = np.pad(part, ((0, 0), (0, pad)))
        hashes[start:start + block] = (np.ascontiguousarray(part).view(np.uint64) * weights).sum(
            axis=1, dtype=np.uint64)
    return hashes


def _unit(features: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows (cosine, as scikit-learn normalises); the embeddings
    themselves when they already are (a copy of a million vectors is a gigabyte)."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # no squared copy of x
    if np.allclose(norms, 1.0, atol=1e-6):
        return x
    return x / np.where(norms > 0, norms, 1.0)


def exact_knn(x: np.ndarray, k: int) -> KnnGraph:
    """Every row's exact k nearest other rows (`_research` of all rows)."""
    n = len(x)
    graph = KnnGraph(np.empty((n, k), dtype=np.float32), np.empty((n, k), dtype=np.int64),
                     np.zeros(n, dtype=bool))
    _research(x, graph, np.arange(n))
    return graph


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


def _ivf_search(queries: np.ndarray, base: np.ndarray, k: int, *, nprobe: int,
                keys=None, seed: int = 0):
    """Approximate inner-product search: a faiss inverted-file index over `base` (2*sqrt(n)
    k-means cells, trained on a sample drawn by the rows' `keys`, in their keyed order, so
    that the cells do not depend on the input order), the `nprobe` cells nearest each query
    searched. Unfilled slots come back as index -1. A small `base` is searched exactly: an
    index would save nothing."""
    import faiss

    n = len(base)
    if n < IVF_MIN_ROWS:
        return _brute_force(queries, base, min(k, n))
    cells = int(2 * np.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(base.shape[1]), base.shape[1], cells,
                               faiss.METRIC_INNER_PRODUCT)
    index.cp.niter, index.cp.seed = 10, seed
    index.train(base[keyed_order(keys_or_positions(keys, n), seed)[: 40 * cells]])
    index.add(base)
    index.nprobe = nprobe
    return index.search(queries, min(k, n))


def approximate_knn(x: np.ndarray, k: int, *, nprobe: int = 2,
                    exact_top_fraction: float = 0.01, keys=None, seed: int = 0) -> KnnGraph:
    """The kNN graph of many rows from a faiss inverted-file index (`_ivf_search`), then
    made exact where the outlier ranking needs it (`exact_where_it_counts`). Costs about
    `nprobe / cells` of an exact search plus the re-search (at least `exact_top_fraction`
    of it)."""
    n = len(x)
    similarity, neighbours = _drop_own(*_ivf_search(x, x, k + 1, nprobe=nprobe, keys=keys,
                                                    seed=seed), np.arange(n))
    graph = KnnGraph(_distances(similarity), neighbours.astype(np.int64),
                     np.zeros(n, dtype=bool))
    return exact_where_it_counts(x, graph, exact_top_fraction)


def exact_where_it_counts(x: np.ndarray, graph: KnnGraph,
                          exact_top_fraction: float = 0.01) -> KnnGraph:
    """Re-search rows exactly until every row whose exact score (mean distance) is in the
    `exact_top_fraction` most distant has exact neighbours; updates `graph` in place.

    A row with approximate neighbours has a mean distance that is an upper bound of its
    exact one. Rows are taken most distant first (exact rows as they are, the others
    re-searched) until every row left has a bound below the exact score of the
    `exact_top_fraction`-th most distant row taken: only the order of the unremarkable rest
    is approximate. Rows with unfilled neighbours (index -1) are re-searched in any case."""
    distances, indices, exact = graph
    n, k = distances.shape
    _research(x, graph, np.flatnonzero((indices < 0).any(axis=1) & ~exact))
    bound = distances.mean(axis=1)
    order = np.argsort(-bound, kind="stable")
    top = max(1, int(np.ceil(exact_top_fraction * n)))
    done = 0
    while done < n:
        # 2% first, then 1% at a time (doubling re-searched up to twice what was needed)
        batch = order[done:min(n, done + (2 * top if done == 0 else top))]
        _research(x, graph, batch[~exact[batch]])
        done += len(batch)
        taken = distances[order[:done]].mean(axis=1)
        kth_exact = np.partition(taken, len(taken) - min(top, done))[len(taken) - min(top, done)]
        if done >= top and (done == n or bound[order[done]] < kth_exact):
            break
    return graph


def _research(x: np.ndarray, graph: KnnGraph, rows: np.ndarray) -> None:
    """Exact neighbours for `rows`, written into `graph` (a row is not its own neighbour;
    where exact duplicates hide it, the farthest of the k + 1 found goes instead)."""
    if not len(rows):
        return
    k = graph.distances.shape[1]
    d, i = _drop_own(*_brute_force(x[rows], x, k + 1), rows)
    graph.distances[rows], graph.indices[rows], graph.exact[rows] = _distances(d), i, True


def extend_graph(x: np.ndarray, old: np.ndarray, stored: KnnGraph, *,
                 approximate: bool = False, nprobe: int = 2) -> KnnGraph:
    """The k-NN graph of all rows of `x` from the graph `stored` of its rows `old`
    (positions in `x`; `stored.indices` point into `old`): an old row's nearest rows are
    its old neighbours or among the new rows; a new row is searched against all. Costs new
    rows x all rows instead of all rows squared. Exact (ties aside) unless `approximate`:
    then the new rows and the old approximate rows are searched by inverted-file indexes,
    the old exact rows exactly among the new rows, and `exact_where_it_counts` finishes."""
    n, k = len(x), stored.distances.shape[1]
    new = np.setdiff1d(np.arange(n), old)
    graph = KnnGraph(np.empty((n, k), dtype=np.float32), np.empty((n, k), dtype=np.int64),
                     np.zeros(n, dtype=bool))
    old_d, old_i = stored.distances, old[stored.indices]
    old_exact = stored.exact if approximate else np.ones(len(old), dtype=bool)
    if len(new):
        near_d = np.empty((len(old), min(k, len(new))), dtype=np.float32)
        near_i = np.empty(near_d.shape, dtype=np.int64)
        for rows, search in ((np.flatnonzero(old_exact), _brute_force),
                             (np.flatnonzero(~old_exact), partial(_ivf_search, nprobe=nprobe))):
            if len(rows):
                similarity, neighbours = search(x[old[rows]], x[new], near_d.shape[1])
                near_d[rows] = _distances(similarity)
                near_i[rows] = np.where(neighbours >= 0, new[neighbours], -1)
        both_d = np.concatenate([old_d, near_d], axis=1)
        both_i = np.concatenate([old_i, near_i], axis=1)
        order = np.argsort(both_d, axis=1, kind="stable")[:, :k]
        old_d, old_i = np.take_along_axis(both_d, order, 1), np.take_along_axis(both_i, order, 1)
        search = partial(_ivf_search, nprobe=nprobe) if approximate else _brute_force
        d, i = _drop_own(*search(x[new], x, k + 1), new)
        graph.distances[new], graph.indices[new] = _distances(d), i
        graph.exact[new] = not approximate
    graph.distances[old], graph.indices[old], graph.exact[old] = old_d, old_i, old_exact
    return exact_where_it_counts(x, graph) if approximate else graph


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


def _fingerprint(x: np.ndarray, rows: np.ndarray | None = None, block: int = 65_536) -> str:
    """SHA-1 of the vectors of `rows` (all rows by default), a block at a time: no copy."""
    import hashlib

    digest = hashlib.sha1()
    rows = np.arange(len(x)) if rows is None else rows
    for start in range(0, len(rows), block):
        digest.update(np.ascontiguousarray(x[rows[start:start + block]]))
    return digest.hexdigest()


def _load_graph(path: Path, row_ids, x: np.ndarray, k: int, *, approximate: bool = False):
    """The previous audit's graph extended to these rows, or None when it cannot be used
    (missing, another k or format, a row gone, a vector changed)."""
    import pandas as pd

    from auditors import cache

    stored = cache.load_npz(path, lambda arrays: (  # a damaged file is deleted, with a warning
        arrays["row_ids"], str(arrays["fingerprint"]),
        KnnGraph(arrays["distances"], arrays["indices"], arrays["exact"])))
    if stored is None:
        return None
    old_ids, digest, graph = stored
    if graph.distances.shape != (len(old_ids), k) or len(old_ids) > len(x) or not len(old_ids):
        return None
    position = pd.Index(_occurrence_keys(row_ids))
    old = position.get_indexer(old_ids.astype(object))
    if not approximate and not graph.exact.all():  # an approximate graph is not extended exactly
        return None
    if (old < 0).any() or _fingerprint(x, old) != digest:
        return None
    return extend_graph(x, old, graph, approximate=approximate)


def _occurrence_keys(row_ids) -> np.ndarray:
    """Unique keys: a row id with its occurrence number (`id#0`, `id#1` for a repeated
    row), so the k-th copy of a repeated row maps to the k-th copy (equal rows have equal
    vectors)."""
    import pandas as pd

    ids = pd.Series(np.asarray(row_ids, dtype=object))
    return (ids + "#" + ids.groupby(ids).cumcount().astype(str)).to_numpy(dtype=object)


def _save_graph(path: Path, row_ids, x: np.ndarray, graph: KnnGraph) -> None:
    from auditors import cache

    cache.save_npz(path, row_ids=np.asarray(_occurrence_keys(row_ids), dtype=str),  # optional
                   distances=graph.distances, indices=graph.indices, exact=graph.exact,
                   fingerprint=np.array(_fingerprint(x)))


DEFAULT_NEIGHBOURS = 10


def prompt_graph(features: np.ndarray, *, k: int = DEFAULT_NEIGHBOURS, row_ids=None,
                 graph_dir: str | Path | None = None, source: str = "",
                 exact_max_rows: int = EXACT_MAX_ROWS) -> CosineKnnGraph | None:
    """The graph of `features` with k = min(k, rows - 1) neighbours (None below two rows).
    With `graph_dir`, the graph of the previous audit of `source` is extended when rows were
    only added (`cosine_knn`)."""
    k = int(min(k, len(features) - 1))
    if k < 1:
        return None
    stored = {"row_ids": row_ids}
    if graph_dir is not None:
        import hashlib

        name = hashlib.sha1(source.encode("utf-8")).hexdigest()[:16]
        stored["graph_file"] = Path(graph_dir) / f"{name}-k{k}.npz"
    return CosineKnnGraph(features, k, exact_max_rows=exact_max_rows, **stored)
