"""Embedding outliers (cleanlab's kNN out-of-distribution score): rows unlike the rest of
the dataset, such as text rewritten by an attacker's template or style."""

from __future__ import annotations

import numpy as np
from cleanlab.outlier import OutOfDistribution

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, register


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
        ood = OutOfDistribution(params={"k": k})
        scores = 1.0 - ood.fit_score(features=features, verbose=False)  # cleanlab: lower = more outlying
        threshold = float(np.quantile(scores, self.issue_quantile)) if len(scores) else 1.0
        is_issue = scores > threshold
        reasons = [f"far from other rows (outlier score {s:.2f})" if f else ""
                   for s, f in zip(scores, is_issue)]
        return self.result(scores, is_issue, reasons, info={"k": k, "threshold": threshold})
