"""Detectors: one module each, all registered in `REGISTRY` on import."""

from auditors.detectors import (activation_cluster, label_issues, outlier,  # noqa: F401
                                degraded_response, injected_content, preference_flip,
                                repeated_response, shortcut, spectral, strip, trigger,
                                unrelated_response)  # (registration)
from auditors.detectors.base import (DEFAULT_DETECTORS, REGISTRY, AuditInputs, Detector,
                                     DetectorResult, register)

__all__ = ["DEFAULT_DETECTORS", "REGISTRY", "AuditInputs", "Detector", "DetectorResult",
           "register"]
