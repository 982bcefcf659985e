"""Shortcut vs. semantics: rows that a shortcut-prone n-gram model fits confidently while
the embedding classifier, which reads meaning, disagrees with their label."""

from __future__ import annotations

import numpy as np

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register


@register(default=False)
class ShortcutDetector(Detector):
    name = "shortcut"
    description = ("n-gram proxy confidence in the given label minus the embedding "
                   "classifier's (both out-of-fold)")
    requires = ("targets", "pred_probs", "proxy")
    role = FusionRole.WEAK
    weight = 0.1

    def __init__(self, min_proxy_confidence: float = 0.9, max_content_confidence: float = 0.1):
        self.min_proxy_confidence = min_proxy_confidence
        self.max_content_confidence = max_content_confidence

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        labels, rows = inputs.targets.codes, np.arange(inputs.n_rows)
        proxy = inputs.proxy.probs[rows, labels]
        content = inputs.pred_probs[rows, labels]
        scores = np.clip(proxy - content, 0.0, 1.0)
        is_issue = (proxy >= self.min_proxy_confidence) & (content <= self.max_content_confidence)
        names = inputs.targets.names
        reasons = [f"n-grams fit label {names[y]} ({p:.2f}) but the content does not ({c:.2f})"
                   if flag else "" for y, p, c, flag in zip(labels, proxy, content, is_issue)]
        return self.result(scores, is_issue, reasons,
                           info={"min_proxy_confidence": self.min_proxy_confidence,
                                 "max_content_confidence": self.max_content_confidence})
