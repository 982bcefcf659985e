"""Small vector geometry shared by features and detectors."""

from __future__ import annotations

import numpy as np


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length, so dot products are cosines."""
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean cosine over all distinct pairs of rows (1.0 for fewer than two rows), in O(n)."""
    n = len(vectors)
    if n < 2:
        return 1.0
    unit = unit_rows(vectors)
    return (float(np.square(unit.sum(axis=0)).sum()) - n) / (n * (n - 1))
