"""trainguard's library: ingest, features, detectors, fusion and outputs (no Prefect here)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainguard")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
