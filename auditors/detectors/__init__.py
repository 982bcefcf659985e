"""Detectors: one module each. Importing this package imports every module in it, and each
module's `@register` adds its detector to `REGISTRY`: a new detector is one file."""

import importlib
import pkgutil

from auditors.detectors.base import (DEFAULT_DETECTORS, REGISTRY, AuditInputs, Detector,
                                     DetectorResult, FusionRole, register)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["DEFAULT_DETECTORS", "REGISTRY", "AuditInputs", "Detector", "DetectorResult",
           "FusionRole", "register"]
