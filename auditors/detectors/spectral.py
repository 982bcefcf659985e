"""Spectral signatures (Tran et al. 2018), applied to sentence embeddings: within each
label, poisoned rows shift the mean along one direction, so their projections on the top
singular vector of the centred embeddings stand out."""

from __future__ import annotations

import numpy as np

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register
from auditors.detectors.stats import percentile_ranks, robust_z


@register(default=False)
class SpectralSignatureDetector(Detector):
    name = "spectral"
    description = "squared projection on the top singular vector of each label's centred embeddings"
    requires = ("targets", "prompt_embeddings")
    role = FusionRole.WEAK
    weight = 0.05

    def __init__(self, z_threshold: float = 4.0, min_rows_per_label: int = 10):
        self.z_threshold = z_threshold
        self.min_rows_per_label = min_rows_per_label

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        labels, features = inputs.targets.codes, inputs.prompt_embeddings
        scores, z = np.zeros(inputs.n_rows), np.zeros(inputs.n_rows)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            if len(members) < self.min_rows_per_label:
                continue
            centred = features[members] - features[members].mean(axis=0)
            top_direction = np.linalg.svd(centred, full_matrices=False)[2][0]
            projection = (centred @ top_direction) ** 2
            scores[members] = percentile_ranks(projection)
            z[members] = robust_z(projection)
        is_issue = z >= self.z_threshold
        names = inputs.targets.names
        reasons = [f"extreme along label {names[y]}'s top singular direction (z {zi:.1f})"
                   if flag else "" for y, zi, flag in zip(labels, z, is_issue)]
        return self.result(scores, is_issue, reasons, info={"z_threshold": self.z_threshold})
