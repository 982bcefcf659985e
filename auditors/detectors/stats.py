"""Small statistics shared by detectors."""

from __future__ import annotations

import numpy as np
from scipy.stats import median_abs_deviation, rankdata


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 * MAD): a z-score that a few extreme rows cannot inflate."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    spread = median_abs_deviation(values, scale="normal")
    if not np.isfinite(spread) or spread <= 0:
        spread = values.std() or 1.0
    return (values - np.median(values)) / spread


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to (0, 1]; ties share their average rank."""
    values = np.asarray(values, dtype=np.float64)
    return rankdata(values) / len(values) if values.size else values


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length, so dot products are cosines."""
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
