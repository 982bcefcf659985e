"""Activation Clustering (Chen et al. 2018, "Detecting Backdoor Attacks on Deep Neural
Networks by Activation Clustering"): the final hidden representation of a classifier's
training rows, split by predicted class, reduced with PCA and split in two by k-means. In
a class that a backdoor targets, the poisoned rows (target label for the trigger's sake)
and the genuine rows activate differently, so one small cluster holds the poison. A
cluster smaller than `max_relative_size` of its class is reported, with the n-grams its
rows share more than the rest of the class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from auditors.features.ngrams import count_ngrams


@dataclass
class ClassClusters:
    label: str
    rows: np.ndarray  # training row indices predicted as this class
    assignment: np.ndarray  # cluster (0/1) of each of those rows
    small_cluster: int | None  # the suspicious cluster, if any
    relative_size: float  # of the smaller cluster
    silhouette: float
    projection: np.ndarray  # 2-D PCA coordinates of each row, for the plot
    shared_ngrams: list[dict]

    @property
    def suspicious_rows(self) -> np.ndarray:
        if self.small_cluster is None:
            return np.array([], dtype=int)
        return self.rows[self.assignment == self.small_cluster]


def cluster_activations(activations: np.ndarray, predicted: np.ndarray, labels: list[str],
                        texts: list[str], *, n_components: int = 10,
                        max_relative_size: float = 0.35, min_silhouette: float = 0.1,
                        seed: int = 0) -> list[ClassClusters]:
    """Two-means per predicted class on PCA-reduced activations. A class is suspicious
    when its smaller cluster holds under `max_relative_size` of its rows and the clusters
    are separated (silhouette at least `min_silhouette`)."""
    result = []
    for class_id, label in enumerate(labels):
        rows = np.flatnonzero(predicted == class_id)
        if len(rows) < 4:
            continue
        result.append(_cluster_class(activations[rows], rows, label, texts, n_components,
                                     max_relative_size, min_silhouette, seed))
    return result


def _cluster_class(points, rows, label, texts, n_components, max_relative_size,
                   min_silhouette, seed) -> ClassClusters:
    k = max(2, min(n_components, points.shape[1], len(rows) - 1))
    reduced = PCA(n_components=k, random_state=seed).fit_transform(points)
    assignment = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
    sizes = np.bincount(assignment, minlength=2)
    smaller = int(np.argmin(sizes))
    relative = float(sizes[smaller] / len(rows))
    silhouette = (float(silhouette_score(reduced, assignment)) if sizes.min() > 0 else 0.0)
    suspicious = relative < max_relative_size and silhouette >= min_silhouette
    in_small = assignment == smaller
    shared = _shared_ngrams([texts[i] for i in rows], in_small) if suspicious else []
    return ClassClusters(label, rows, assignment, smaller if suspicious else None, relative,
                         silhouette, reduced[:, :2], shared)


def _shared_ngrams(texts: list[str], in_cluster: np.ndarray, *, top: int = 10) -> list[dict]:
    """n-grams far more common inside the cluster than in the rest of its class."""
    stats = count_ngrams(texts, max_n=2, min_support=2)
    if not len(stats.vocabulary):
        return []
    matrix = stats.rows_x_ngrams
    inside = np.asarray(matrix[in_cluster].mean(axis=0)).ravel()
    outside = np.asarray(matrix[~in_cluster].mean(axis=0)).ravel() if (~in_cluster).any() \
        else np.zeros_like(inside)
    lift = inside - outside
    best = np.argsort(-lift, kind="stable")[:top]
    return [{"ngram": str(stats.vocabulary[j]), "cluster_share": float(inside[j]),
             "rest_share": float(outside[j])} for j in best if lift[j] > 0]


def write_plot(clusters: list[ClassClusters], path) -> None:
    """A 2-D scatter per class (first two principal components), the small cluster in
    red: matplotlib when installed, else a plain SVG."""
    try:
        import matplotlib
    except ImportError:
        return _write_svg(clusters, path)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, max(1, len(clusters)), figsize=(5 * max(1, len(clusters)), 4),
                                squeeze=False)
    for axis, group in zip(axes[0], clusters):
        colors = ["tab:red" if group.small_cluster == a else "tab:blue" for a in group.assignment]
        axis.scatter(group.projection[:, 0], group.projection[:, 1], s=6, c=colors)
        axis.set_title(f"predicted {group.label}: small cluster {group.relative_size:.0%}")
    figure.savefig(path, format="svg" if str(path).endswith(".svg") else None)
    plt.close(figure)


def _write_svg(clusters: list[ClassClusters], path, size: int = 320) -> None:
    from xml.sax.saxutils import escape

    panels = []
    for k, group in enumerate(clusters):
        xy = group.projection
        low, span = xy.min(axis=0), np.ptp(xy, axis=0) + 1e-9
        scaled = 20 + (xy - low) / span * (size - 40)
        dots = "".join(
            f'<circle cx="{k * size + x:.1f}" cy="{size - y:.1f}" r="2" '
            f'fill="{"red" if group.small_cluster == a else "steelblue"}"/>'
            for (x, y), a in zip(scaled, group.assignment))
        title = escape(f"predicted {group.label}: small cluster {group.relative_size:.0%}")
        panels.append(f'<text x="{k * size + 10}" y="14" font-size="12">{title}</text>{dots}')
    width = size * max(1, len(clusters))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
                     f'height="{size}" viewBox="0 0 {width} {size}">'
                     f'<rect width="100%" height="100%" fill="white"/>{"".join(panels)}</svg>\n')


def occlusion_deltas(classifier, texts: list[str], *, batch_size: int = 512) -> np.ndarray:
    """A contrast of final hidden activations: for every row, the head input minus the
    head input with its most decisive word removed (the word whose removal lowers the
    predicted class's probability most). A trigger word carries a poisoned row's
    prediction alone, so removing it moves the activation far and in one direction;
    a clean row's evidence is usually spread over several words. Costs one forward pass
    per word of every row."""
    base = classifier.probs(texts, batch_size=batch_size)
    predicted = base.argmax(axis=1)
    words = [t.split() for t in texts]
    variants, owner = [], []
    for i, row in enumerate(words):
        for j in range(len(row)):
            variants.append(" ".join(row[:j] + row[j + 1:]))
            owner.append(i)
    owner = np.asarray(owner, dtype=int)
    occluded = texts[:]  # rows of one word keep themselves (no contrast)
    if variants:
        probs = classifier.probs(variants, batch_size=batch_size)
        drop = base[owner, predicted[owner]] - probs[np.arange(len(owner)), predicted[owner]]
        best: dict[int, int] = {}
        for k, (i, d) in enumerate(zip(owner, drop)):
            if len(words[i]) > 1 and (i not in best or d > drop[best[i]]):
                best[i] = k
        for i, k in best.items():
            occluded[i] = variants[k]
    return classifier.head_inputs(texts) - classifier.head_inputs(occluded)
