"""Responses unrelated to their prompts: the mark of untargeted (denial-of-service) and
fixed-output backdoors, whose response ignores what was asked. Scored by how far below the
dataset's typical prompt–response cosine similarity a row falls."""

from __future__ import annotations

import numpy as np

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register
from auditors.detectors.stats import percentile_ranks, robust_z
from auditors.features.geometry import unit_rows


@register
class UnrelatedResponseDetector(Detector):
    name = "unrelated_response"
    description = "prompt–response embedding similarity far below the dataset's own norm"
    requires = ("response_embeddings",)
    role = FusionRole.WEAK
    weight = 0.1

    def __init__(self, z_threshold: float = 3.5):
        self.z_threshold = z_threshold

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        prompts = unit_rows(inputs.prompt_embeddings)
        responses = unit_rows(inputs.response_embeddings)
        similarity = (prompts * responses).sum(axis=1)
        z = -robust_z(similarity)  # higher = less related than usual
        is_issue = z >= self.z_threshold
        reasons = [f"response unrelated to its prompt (cosine {s:.2f}, z {zi:.1f})" if flag else ""
                   for s, zi, flag in zip(similarity, z, is_issue)]
        return self.result(percentile_ranks(-similarity), is_issue, reasons,
                           info={"z_threshold": self.z_threshold,
                                 "median_similarity": float(np.median(similarity))})
