"""Cleanlab label issues: rows whose label (or derived target) the embedding classifier's
out-of-fold probabilities do not support."""

from __future__ import annotations

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register


@register
class LabelIssueDetector(Detector):
    name = "label_issue"
    description = "Cleanlab confident learning on cross-validated embedding-classifier probabilities"
    requires = ("targets", "pred_probs")
    role = FusionRole.WEAK
    weight = 0.2

    def __init__(self, filter_by: str = "prune_by_noise_rate",
                 quality_method: str = "self_confidence"):
        self.filter_by = filter_by
        self.quality_method = quality_method

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        labels, probs = inputs.targets.codes, inputs.pred_probs
        # cleanlab's quality is lower = worse; trainguard scores are higher = more suspicious
        scores = 1.0 - get_label_quality_scores(labels, probs, method=self.quality_method)
        # n_jobs=1: cleanlab forks worker processes otherwise, which can deadlock after
        # torch has started its threads
        is_issue = find_label_issues(labels, probs, filter_by=self.filter_by, n_jobs=1)
        predicted = probs.argmax(axis=1)
        names = inputs.targets.names
        reasons = [f"label {names[y]} but content suggests {names[p]} ({probs[i, p]:.2f})"
                   if flag else "" for i, (y, p, flag) in enumerate(zip(labels, predicted, is_issue))]
        return self.result(scores, is_issue, reasons,
                           info={"filter_by": self.filter_by, "quality_method": self.quality_method,
                                 "issues": int(np.sum(is_issue))})
