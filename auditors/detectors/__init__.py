"""Detectors: one module each, all registered in `REGISTRY` on import."""

from auditors.detectors import label_issues, outlier, trigger  # noqa: F401  (registration)
from auditors.detectors.base import (DEFAULT_DETECTORS, REGISTRY, AuditInputs, Detector,
                                     DetectorResult, register)

__all__ = ["DEFAULT_DETECTORS", "REGISTRY", "AuditInputs", "Detector", "DetectorResult",
           "register"]
