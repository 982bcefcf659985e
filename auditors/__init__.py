"""trainguard's library: ingest, features, detectors, fusion and outputs (no Prefect here)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainguard")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["Audit", "AuditConfig", "LoadOptions", "audit"]


def __getattr__(name: str):
    """`from auditors import audit, AuditConfig`: imported on first use, so that importing
    one small module of the library does not load the whole pipeline."""
    if name in ("audit", "Audit"):
        from auditors import api

        return getattr(api, name)
    if name in ("AuditConfig", "LoadOptions"):
        from auditors import config

        return getattr(config, name)
    raise AttributeError(f"module 'auditors' has no attribute '{name}'")
