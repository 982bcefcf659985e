"""Activation clustering (Chen et al. 2018), applied to sentence embeddings: within each
label, reduce and split the rows into two clusters; a backdoor shows as a small, separate
cluster (the original uses a relative size below about 0.35)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register
from auditors.features.row_keys import keyed_order, keys_or_positions


@register(default=False)
class ActivationClusterDetector(Detector):
    name = "activation_cluster"
    description = "2-means per label on PCA-reduced embeddings; rows of a small, separated cluster"
    requires = ("targets", "prompt_embeddings")
    role = FusionRole.WEAK
    weight = 0.05

    def __init__(self, components: int = 10, max_relative_size: float = 0.35,
                 min_silhouette: float = 0.15, min_rows_per_label: int = 20, seed: int = 0):
        self.components = components
        self.max_relative_size = max_relative_size
        self.min_silhouette = min_silhouette
        self.min_rows_per_label = min_rows_per_label
        self.seed = seed

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        labels = inputs.targets.codes
        scores, is_issue = np.zeros(inputs.n_rows), np.zeros(inputs.n_rows, dtype=bool)
        clusters, reasons = [], [""] * inputs.n_rows
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            if len(members) < self.min_rows_per_label:
                continue
            # k-means starts and the silhouette sample are drawn by position: keyed order
            keys = keys_or_positions(inputs.row_keys, inputs.n_rows)
            members = members[keyed_order(keys[members], self.seed)]
            split = self._split(inputs.prompt_embeddings[members])
            clusters.append({"label": inputs.targets.names[label], **split["summary"]})
            scores[members] = split["membership"]
            if split["summary"]["suspicious"]:
                small = members[split["in_small"]]
                is_issue[small] = True
                for row in small:
                    reasons[row] = (f"in a small separate cluster of label "
                                    f"{inputs.targets.names[label]} "
                                    f"({split['summary']['relative_size']:.0%} of it, "
                                    f"silhouette {split['summary']['silhouette']:.2f})")
        return self.result(scores, is_issue, reasons, info={"clusters": clusters})

    def _split(self, features: np.ndarray) -> dict:
        n_components = int(min(self.components, features.shape[1], len(features) - 1))
        reduced = PCA(n_components, random_state=self.seed).fit_transform(features)
        kmeans = KMeans(2, n_init=10, random_state=self.seed).fit(reduced)
        sizes = np.bincount(kmeans.labels_, minlength=2)
        small = int(sizes.argmin())
        relative_size = float(sizes[small] / len(features))
        silhouette = float(silhouette_score(reduced, kmeans.labels_, sample_size=min(
            len(features), 2000), random_state=self.seed))
        distances = kmeans.transform(reduced)
        margin = distances[:, 1 - small] - distances[:, small]  # > 0: nearer the small cluster
        membership = 1.0 / (1.0 + np.exp(-3.0 * margin / (margin.std() + 1e-9)))
        suspicious = relative_size <= self.max_relative_size and silhouette >= self.min_silhouette
        # the score only means "poisoned" when the split looks like a backdoor's
        membership = membership * (1.0 - relative_size) if suspicious else membership * 0.1
        return {"membership": membership, "in_small": kmeans.labels_ == small,
                "summary": {"relative_size": round(relative_size, 4),
                            "silhouette": round(silhouette, 4), "suspicious": suspicious}}
