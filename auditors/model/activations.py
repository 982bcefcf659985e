"""Activation Clustering (Chen et al. 2018, "Detecting Backdoor Attacks on Deep Neural
Networks by Activation Clustering"): a representation of every training row of a
classifier, split by predicted class, reduced with PCA and clustered; small clusters are
reported with the n-grams their rows share more than the rest of the class.

Two clusterings:

- `kmeans2`, Chen et al.'s: two clusters per class; the smaller is suspicious when it holds
  under `max_relative_size` of the class and the two are separated (silhouette).
- `hdbscan`: density clustering (any number of clusters, rows in no dense region are
  noise), for backdoors with several triggers, whose poison forms several small groups.
  Every cluster under `max_relative_size` of its class is a candidate; with
  `changes_class` (per row: does the predicted class change when the row's most decisive
  word is removed?) a candidate is suspicious only when at least `min_class_change` of its
  rows change class. This stands in for Chen et al.'s exclusionary reclassification (does
  a model trained without the cluster put its rows in another class?): a poisoned row's
  label rests on its trigger, and without it the row is read as what its text says.

Representations (built here, clustered by `cluster_activations`): the head input
(`Classifier.head_inputs`, Chen et al.'s), its change under occlusion of the decisive word
(`occlusion_deltas`), and the input embedding of the decisive word itself
(`decisive_token_embeddings`), which groups the rows whose prediction rests on the same
token."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from auditors.features.ngrams import count_ngrams

METHODS = ("kmeans2", "hdbscan")


@dataclass
class Cluster:
    rows: np.ndarray  # training row indices
    relative_size: float  # share of its class
    class_change: float | None  # share of its rows whose class changes without their
    # decisive word (None when not measured)
    suspicious: bool
    shared_ngrams: list[dict]  # filled for suspicious clusters only


@dataclass
class ClassClusters:
    label: str
    rows: np.ndarray  # training row indices predicted as this class
    assignment: np.ndarray  # cluster of each of those rows (-1: noise, hdbscan only)
    clusters: list[Cluster]  # in the order of `assignment`'s ids 0, 1, ...
    method: str
    silhouette: float | None  # kmeans2 only
    projection: np.ndarray  # 2-D PCA coordinates of each row, for the plot
    shared_ngrams: list[dict]  # of all suspicious rows together against the rest

    @property
    def suspicious_rows(self) -> np.ndarray:
        parts = [c.rows for c in self.clusters if c.suspicious]
        return np.sort(np.concatenate(parts)) if parts else np.array([], dtype=int)

    @property
    def suspicious_clusters(self) -> list[Cluster]:
        return [c for c in self.clusters if c.suspicious]

    @property
    def relative_size(self) -> float:
        """The share of the class in suspicious clusters or, when none, in the smallest
        cluster (for kmeans2 the smaller of the two, as Chen et al. report it)."""
        if self.suspicious_clusters:
            return float(sum(c.relative_size for c in self.suspicious_clusters))
        return min((c.relative_size for c in self.clusters), default=0.0)


def cluster_activations(activations: np.ndarray, predicted: np.ndarray, labels: list[str],
                        texts: list[str], *, method: str = "kmeans2", n_components: int = 10,
                        max_relative_size: float = 0.35, min_silhouette: float = 0.1,
                        min_cluster_size: int = 8, changes_class: np.ndarray | None = None,
                        min_class_change: float = 0.5, seed: int = 0) -> list[ClassClusters]:
    """Cluster each predicted class's PCA-reduced activations (see the module docstring
    for the two methods and the class-change test)."""
    if method not in METHODS:
        raise ValueError(f"unknown clustering {method!r} ({', '.join(METHODS)})")
    result = []
    for class_id, label in enumerate(labels):
        rows = np.flatnonzero(predicted == class_id)
        if len(rows) < 4:
            continue
        k = max(2, min(n_components, activations.shape[1], len(rows) - 1))
        reduced = PCA(n_components=k, random_state=seed).fit_transform(activations[rows])
        if method == "kmeans2":
            assignment = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
            sizes = np.bincount(assignment, minlength=2)
            silhouette = (float(silhouette_score(reduced, assignment)) if sizes.min() > 0
                          else 0.0)
            candidates = {int(np.argmin(sizes))} if silhouette >= min_silhouette else set()
        else:
            assignment = HDBSCAN(min_cluster_size=min(min_cluster_size, len(rows)),
                                 copy=True).fit_predict(reduced)
            silhouette = None
            candidates = set(range(assignment.max() + 1))
        clusters = []
        for c in range(assignment.max() + 1):
            members = rows[assignment == c]
            relative = float(len(members) / len(rows))
            change = (float(np.mean(changes_class[members])) if changes_class is not None
                      else None)
            suspicious = (c in candidates and relative < max_relative_size
                          and (change is None or change >= min_class_change))
            clusters.append(Cluster(members, relative, change, suspicious, []))
        in_suspicious = np.isin(assignment, [c for c, x in enumerate(clusters) if x.suspicious])
        shared = []
        if in_suspicious.any():
            stats = count_ngrams([texts[i] for i in rows], max_n=2, min_support=2)
            shared = _shared_ngrams(stats, in_suspicious)
            for c, cluster in enumerate(clusters):
                if cluster.suspicious:
                    cluster.shared_ngrams = _shared_ngrams(stats, assignment == c)
        result.append(ClassClusters(label, rows, assignment, clusters, method, silhouette,
                                    reduced[:, :2], shared))
    return result


def _shared_ngrams(stats, in_cluster: np.ndarray, *, top: int = 10) -> list[dict]:
    """n-grams far more common inside the cluster than in the rest of its class (`stats`:
    `count_ngrams` of the class's texts)."""
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
        colors = [{"red": "tab:red", "steelblue": "tab:blue"}.get(c, c)
                  for c in _colors(group)]
        axis.scatter(group.projection[:, 0], group.projection[:, 1], s=6, c=colors)
        axis.set_title(_title(group))
    figure.savefig(path, format="svg" if str(path).endswith(".svg") else None)
    plt.close(figure)


def _colors(group: ClassClusters) -> list[str]:
    """Red: suspicious clusters; blue: other clusters; grey: noise (hdbscan)."""
    suspicious = {c for c, cluster in enumerate(group.clusters) if cluster.suspicious}
    return ["red" if a in suspicious else "lightgray" if a < 0 else "steelblue"
            for a in group.assignment]


def _title(group: ClassClusters) -> str:
    found = group.suspicious_clusters
    if not found:
        return f"predicted {group.label}: nothing suspicious"
    return (f"predicted {group.label}: {len(found)} suspicious cluster(s), "
            f"{group.relative_size:.0%} of the class")


def _write_svg(clusters: list[ClassClusters], path, size: int = 320) -> None:
    from xml.sax.saxutils import escape

    panels = []
    for k, group in enumerate(clusters):
        xy = group.projection
        low, span = xy.min(axis=0), np.ptp(xy, axis=0) + 1e-9
        scaled = 20 + (xy - low) / span * (size - 40)
        dots = "".join(
            f'<circle cx="{k * size + x:.1f}" cy="{size - y:.1f}" r="2" fill="{color}"/>'
            for (x, y), color in zip(scaled, _colors(group)))
        title = escape(_title(group))
        panels.append(f'<text x="{k * size + 10}" y="14" font-size="12">{title}</text>{dots}')
    width = size * max(1, len(clusters))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
                     f'height="{size}" viewBox="0 0 {width} {size}">'
                     f'<rect width="100%" height="100%" fill="white"/>{"".join(panels)}</svg>\n')


@dataclass
class Occlusion:
    """Each row's most decisive word: the whitespace-separated word whose removal lowers
    the predicted class's probability most (one forward pass per word)."""
    word_index: np.ndarray  # in text.split(); -1 for an empty row
    occluded: list[str]  # the row without that word (one-word rows: the row itself)
    changes_class: np.ndarray  # bool: the predicted class changes without the word


def occlude_decisive_words(classifier, texts: list[str], *,
                           batch_size: int = 512) -> Occlusion:
    """The most decisive word of every row and what its removal does. Rows of one word
    keep it (nothing would be left to classify) and count as not changing class."""
    base = classifier.probs(texts, batch_size=batch_size)
    predicted = base.argmax(axis=1)
    words = [t.split() for t in texts]
    variants, owner = [], []
    for i, row in enumerate(words):
        for j in range(len(row)):
            variants.append(" ".join(row[:j] + row[j + 1:]))
            owner.append(i)
    owner = np.asarray(owner, dtype=int)
    word_index = np.array([0 if row else -1 for row in words], dtype=int)
    occluded = list(texts)
    changes = np.zeros(len(texts), dtype=bool)
    if variants:
        probs = classifier.probs(variants, batch_size=batch_size)
        drop = base[owner, predicted[owner]] - probs[np.arange(len(owner)), predicted[owner]]
        first = np.r_[0, np.cumsum([len(row) for row in words])[:-1]]
        for i, row in enumerate(words):
            if len(row) < 2:
                continue
            k = first[i] + int(np.argmax(drop[first[i]:first[i] + len(row)]))
            word_index[i] = k - first[i]
            occluded[i] = variants[k]
            changes[i] = probs[k].argmax() != predicted[i]
    return Occlusion(word_index, occluded, changes)


def occlusion_deltas(classifier, texts: list[str], occlusion: Occlusion | None = None, *,
                     batch_size: int = 512) -> np.ndarray:
    """A contrast of final hidden activations: for every row, the head input minus the
    head input with its most decisive word removed. A trigger word carries a poisoned
    row's prediction alone, so removing it moves the activation far and in one direction;
    a clean row's evidence is usually spread over several words."""
    occlusion = occlusion or occlude_decisive_words(classifier, texts, batch_size=batch_size)
    return classifier.head_inputs(texts) - classifier.head_inputs(occlusion.occluded)


def decisive_token_embeddings(classifier, texts: list[str],
                              occlusion: Occlusion | None = None) -> np.ndarray:
    """The model's input embedding of every row's most decisive word (the mean over its
    tokens; zeros for an empty row). Rows whose prediction rests on the same token land
    on the same point, so a trigger's poisoned rows form one dense cluster, whatever the
    rest of their text says."""
    occlusion = occlusion or occlude_decisive_words(classifier, texts)
    table = classifier.model.get_input_embeddings().weight.detach().float().numpy()
    out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
    for i, (text, j) in enumerate(zip(texts, occlusion.word_index)):
        if j >= 0:
            ids = _word_token_ids(classifier, text, int(j))
            if ids:
                out[i] = table[ids].mean(axis=0)
    return out


def _word_token_ids(classifier, text: str, j: int) -> list[int]:
    """The ids of the tokens that the tokenizer gives the j-th whitespace word of `text`
    in context (character offsets, fast tokenizers), else of the word alone."""
    tokenizer = classifier.tokenizer
    span = list(re.finditer(r"\S+", text))[j].span()
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False,
                            truncation=True, max_length=classifier.max_length)
        ids = [t for t, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])
               if b > a and a < span[1] and b > span[0]]
        if ids:
            return ids
    return list(tokenizer(text[span[0]:span[1]], add_special_tokens=False)["input_ids"])
