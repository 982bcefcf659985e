"""Embedding outliers (cleanlab's kNN out-of-distribution score): rows unlike the rest of
the dataset, such as text rewritten by an attacker's template or style. The kNN graph is a
shared feature (`auditors.features.knn`); cleanlab scores it, handed to `OutOfDistribution`
as a fitted kNN object."""

from __future__ import annotations

import warnings

import numpy as np
from cleanlab.outlier import OutOfDistribution

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register


@register
class EmbeddingOutlierDetector(Detector):
    name = "outlier"
    description = "kNN distance of the prompt embedding to its neighbours (cleanlab OutOfDistribution)"
    requires = ("prompt_embeddings", "knn_graph")
    role = FusionRole.WEAK
    weight = 0.05

    def __init__(self, issue_quantile: float = 0.99):
        self.issue_quantile = issue_quantile

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        features, graph = inputs.prompt_embeddings, inputs.knn_graph
        ood = OutOfDistribution(params={"knn": graph})
        with warnings.catch_warnings():  # "already been fit": it is, on these rows
            warnings.filterwarnings("ignore", "A KNN estimator has previously")
            scores = 1.0 - ood.fit_score(features=features, verbose=False)  # cleanlab: lower = more outlying
        threshold = float(np.quantile(scores, self.issue_quantile)) if len(scores) else 1.0
        is_issue = scores > threshold
        reasons = [f"far from other rows (outlier score {s:.2f})" if f else ""
                   for s, f in zip(scores, is_issue)]
        return self.result(scores, is_issue, reasons,
                           info={"k": graph.n_neighbors, "threshold": threshold})
