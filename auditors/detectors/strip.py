"""STRIP on the n-gram proxy (after Gao et al. 2019): a row whose prediction stays on its
own label, with low entropy, when random other rows are superimposed on it carries
something that overrides content, as a trigger does."""

from __future__ import annotations

import numpy as np

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register


@register(default=False)
class StripDetector(Detector):
    name = "strip"
    description = ("prediction entropy of the cross-fitted n-gram proxy under superimposition "
                   "with random rows (low entropy on the row's own label = suspicious)")
    requires = ("targets", "proxy")
    role = FusionRole.WEAK
    weight = 0.1

    def __init__(self, min_steadiness: float = 0.95):
        self.min_steadiness = min_steadiness

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        proxy, labels = inputs.proxy, inputs.targets.codes
        max_entropy = np.log(max(inputs.targets.n_classes, 2))
        steadiness = 1.0 - proxy.blend_entropy / max_entropy
        # only steadiness towards the row's own label is the attacker's signature
        scores = np.where(proxy.probs.argmax(axis=1) == labels, steadiness, 0.0)
        # steadiness = 1 - entropy / max entropy: 0.95 keeps predictions near-certain
        is_issue = scores >= self.min_steadiness
        reasons = [f"prediction stays on its label under {proxy.n_blends} random blends "
                   f"(entropy {e:.3f} nats)" if flag else ""
                   for e, flag in zip(proxy.blend_entropy, is_issue)]
        return self.result(scores, is_issue, reasons, info={"min_steadiness": self.min_steadiness,
                                                            "n_blends": proxy.n_blends})
